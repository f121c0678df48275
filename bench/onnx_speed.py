"""ONNX Runtime (probabilities + heatmap, one graph) against eager PyTorch (probabilities only), in one run.

The default model (tf_efficientnet_lite0, 6 classes, offline ImageNet backbone) at 224 × 224, exported by mieruka,
batch 1 and 16, on the CPU. Timings are interleaved (every repetition times each contender once, in turn) and the
median is kept, so that the load of a shared machine hits all of them alike.

Contenders:
  * torch_plain: ``model(x)`` under ``torch.inference_mode()``, default memory format — plain eager inference;
  * torch_channels_last: the same in channels-last memory format, which mieruka's own PyTorch predict path uses;
  * onnx: ONNX Runtime on the exported file, outputs probabilities *and* the predicted class's heatmap.

    python bench/onnx_speed.py [--model MODEL.onnx] [--batches 1,16] [--repeats 15]

Prints, as its last line, one JSON object: ``speedup_vs_torch`` (the smallest over the batch sizes of onnx images/s
over torch_plain images/s), ``speedup_vs_channels_last`` (likewise), and per batch size the images/s of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description, default_model

from mieruka.export import export_model
from mieruka.runtime import OnnxModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per batch size (default 15)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    model, info = default_model(args.size)
    model_cl = default_model(args.size)[0].to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        exported = export_model(model, info, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t0
        runtime = OnnxModel(exported.path)
        result: dict[str, object] = {"export_s": round(export_s, 1), "outputs": list(runtime.outputs)}
        speedups, speedups_cl = [], []
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(batch))
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_np = x.numpy()

            def plain(x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    model(x)

            def channels_last(x_cl: torch.Tensor = x_cl) -> None:
                with torch.inference_mode():
                    model_cl(x_cl)

            def onnx(x_np: np.ndarray = x_np) -> None:
                _, heat = runtime.run(x_np)
                assert heat is not None and heat.shape == (x_np.shape[0], args.size, args.size)

            contenders = {"torch_plain": plain, "torch_channels_last": channels_last, "onnx": onnx}
            times: dict[str, list[float]] = {k: [] for k in contenders}
            for fn in contenders.values():  # warm-up
                fn()
                fn()
            for _ in range(args.repeats):
                for name, fn in contenders.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            ips = {name: batch / statistics.median(ts) for name, ts in times.items()}
            speedups.append(ips["onnx"] / ips["torch_plain"])
            speedups_cl.append(ips["onnx"] / ips["torch_channels_last"])
            result[f"batch{batch}"] = {
                **{f"{k}_ips": round(v, 1) for k, v in ips.items()},
                "onnx_ms": round(1000 * statistics.median(times["onnx"]), 2),
                "speedup_vs_torch": round(speedups[-1], 2),
                "speedup_vs_channels_last": round(speedups_cl[-1], 2),
            }
            print(f"batch {batch}: " + json.dumps(result[f"batch{batch}"]), file=sys.stderr)
    result["speedup_vs_torch"] = round(min(speedups), 2)
    result["speedup_vs_channels_last"] = round(min(speedups_cl), 2)
    result["device"] = cpu_description()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
