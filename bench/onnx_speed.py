"""ONNX Runtime graphs (probabilities + heatmap, float32 and int8) against eager PyTorch (probabilities only).

A model exported by mieruka (default: tf_efficientnet_lite0 with its offline ImageNet backbone and a 6-class head at
224 × 224; ``--model`` a trained ``.safetensors``), batch 1 and 16, on the CPU. The int8 graph is the one
``mieruka export --precision int8`` writes, calibrated on 256 images of the training split of ``--data``; its test
split measures what int8 costs: accuracy (points) and the heatmap's Pearson correlation with float32, mean over the
images. Timings are interleaved (every repetition times each contender once, in an order shuffled anew every repetition
with a fixed seed) and the median is kept, so that the load of a shared machine hits all of them alike and no contender
always runs right after the same other one: a runtime that follows another starts with the other's data in the caches
and, after eager PyTorch, with its OpenMP threads still spinning on the cores.

Contenders:
  * torch_plain: ``model(x)`` under ``torch.inference_mode()``, default memory format — plain eager inference;
  * torch_channels_last: the same in channels-last memory format, which mieruka's own PyTorch predict path uses;
  * onnx: ONNX Runtime on the exported float32 file, outputs probabilities *and* the predicted class's heatmap;
  * onnx_int8: the same for the int8 file;
  * openvino, openvino_int8: the two graphs as OpenVINO IR (when ``openvino`` is installed), float32 arithmetic for
    the first.

    python bench/onnx_speed.py [--model MODEL.safetensors] [--data MANIFEST] [--batches 1,16] [--repeats 15] [--block 1]

Prints, as its last line, one JSON object: ``speedup_vs_torch`` (the fastest graph's smallest ratio over the batch
sizes of its images/s to torch_plain's; ``fastest_graph`` names it), ``speedup_vs_channels_last`` (likewise),
``int8_speedup_vs_fp32`` (smallest over the batch sizes), ``int8_heatmap_corr``, ``int8_accuracy_delta`` (points,
int8 − fp32), ``int8_agreement``, and per batch size the images/s of each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description, default_model

from mieruka.checkpoint import load_checkpoint
from mieruka.deploy.precision import calibration_images, compare, convert
from mieruka.export import export_model
from mieruka.runtime import OnnxModel

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/magnetic-tile/manifest.csv"


def _test_set(info, data: Path) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The test split of ``data`` as model input, and its labels."""
    from mieruka.data.store import ImageStore, normalize

    dataset = info.load_dataset(data)
    samples = dataset.split("test")
    store = ImageStore([s.image for s in samples], info.image_size, progress=False).require_readable()
    x = normalize(store.get(range(len(samples))), info.mean, info.std).numpy()
    return x, np.array([dataset.label_index(s) for s in samples])


def _openvino_graphs(fp32: Path, int8: Path, tmp: Path) -> dict[str, object]:
    """The same two graphs as OpenVINO IR (float32 arithmetic for fp32), when openvino is installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {}
    from mieruka.deploy.exported import onnx_metadata_of
    from mieruka.deploy.openvino import OpenVinoModel, write_ir

    out = {}
    for name, path in (("openvino", fp32), ("openvino_int8", int8)):
        out[name] = OpenVinoModel(write_ir(path, tmp / f"{name}.xml", onnx_metadata_of(path)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained .safetensors (default: the untrained default model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="calibration (train) and test data")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per batch size (default 15)")
    parser.add_argument(
        "--block",
        type=int,
        default=1,
        help="timed calls of one contender in a row, after one untimed call (default 1: contenders alternate every "
        "call, each starting cold after another; 5: the steady state of a process that runs one model)",
    )
    parser.add_argument("--size", type=int, default=224, help="input size of the default model")
    args = parser.parse_args()
    if args.model is not None:
        model, info, _ = load_checkpoint(args.model, "cpu")
    else:
        model, info = default_model(args.size)
    size = info.image_size
    model_cl = load_checkpoint(args.model, "cpu")[0] if args.model is not None else default_model(args.size)[0]
    model_cl = model_cl.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        exported = export_model(model, info, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t0
        calib = calibration_images(info, args.data, "train")
        t0 = time.perf_counter()
        convert(exported.path, Path(tmp) / "int8.onnx", "int8", calib)
        result: dict[str, object] = {"export_s": round(export_s, 1), "int8_s": round(time.perf_counter() - t0, 1)}
        x_test, y_test = _test_set(info, args.data)
        check = compare(exported.path, Path(tmp) / "int8.onnx", "int8", x_test)
        graphs = {"onnx": OnnxModel(exported.path), "onnx_int8": OnnxModel(Path(tmp) / "int8.onnx")}
        graphs.update(_openvino_graphs(exported.path, Path(tmp) / "int8.onnx", Path(tmp)))
        acc = {k: float((np.concatenate([g.run(x_test[i : i + 16])[0] for i in range(0, len(x_test), 16)]).argmax(1)
                         == y_test).mean()) for k, g in graphs.items()}  # fmt: skip
        result.update(
            images_test=len(x_test),
            fp32_accuracy=round(acc["onnx"], 4),
            int8_accuracy=round(acc["onnx_int8"], 4),
            int8_accuracy_delta=round(100 * (acc["onnx_int8"] - acc["onnx"]), 2),
            int8_agreement=round(check.agreement, 4),
            int8_heatmap_corr=round(check.heatmap_corr or float("nan"), 4),
            int8_mean_prob_diff=round(check.mean_prob_diff, 5),
        )
        ratios: dict[str, list[float]] = {"onnx": [], "onnx_int8": [], "cl": [], "int8_vs_fp32": []}
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_np = x.numpy()

            def plain(x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    model(x)

            def channels_last(x_cl: torch.Tensor = x_cl) -> None:
                with torch.inference_mode():
                    model_cl(x_cl)

            def graph(name: str, x_np: np.ndarray = x_np):  # type: ignore[no-untyped-def]
                def run() -> None:
                    _, heat = graphs[name].run(x_np)
                    assert heat is not None and heat.shape == (x_np.shape[0], size, size)

                return run

            contenders = {"torch_plain": plain, "torch_channels_last": channels_last}
            contenders.update({name: graph(name) for name in graphs})
            times: dict[str, list[float]] = {k: [] for k in contenders}
            for fn in contenders.values():  # warm-up
                fn()
                fn()
            order = random.Random(batch)
            for _ in range(max(1, args.repeats // args.block)):
                for name, fn in order.sample(list(contenders.items()), len(contenders)):
                    if args.block > 1:
                        fn()  # after another contender: caches and thread pools are the other's; not timed
                    for _ in range(args.block):
                        t = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - t)
            ips = {name: batch / statistics.median(ts) for name, ts in times.items()}
            for name in graphs:
                ratios.setdefault(name, []).append(ips[name] / ips["torch_plain"])
            fastest = max(ips[name] for name in graphs)
            ratios["cl"].append(fastest / ips["torch_channels_last"])
            ratios["int8_vs_fp32"].append(ips["onnx_int8"] / ips["onnx"])
            result[f"batch{batch}"] = {
                **{f"{k}_ips": round(v, 1) for k, v in ips.items()},
                "onnx_ms": round(1000 * statistics.median(times["onnx"]), 2),
                **{f"{k}_ms": round(1000 * statistics.median(times[k]), 2) for k in graphs if k != "onnx"},
                "int8_vs_fp32": round(ratios["int8_vs_fp32"][-1], 2),
            }
            print(f"batch {batch}: " + json.dumps(result[f"batch{batch}"]), file=sys.stderr)
    fastest_graph = max(graphs, key=lambda name: min(ratios[name]))
    result["speedup_vs_torch"] = round(min(ratios[fastest_graph]), 2)
    result["fastest_graph"] = fastest_graph
    result["fp32_speedup_vs_torch"] = round(min(ratios["onnx"]), 2)
    for name in graphs:
        result[f"{name}_speedup_vs_torch"] = round(min(ratios[name]), 2)
    result["speedup_vs_channels_last"] = round(min(ratios["cl"]), 2)
    result["int8_speedup_vs_fp32"] = round(min(ratios["int8_vs_fp32"]), 2)
    result["block"] = args.block
    result["model"] = str(args.model) if args.model else f"{info.arch} (ImageNet backbone, untrained head)"
    result["size"] = size
    result["device"] = cpu_description()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
