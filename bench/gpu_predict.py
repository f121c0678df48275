"""`mieruka predict` over a folder of JPEGs against the model's own speed, on one device, in one run.

Writes ``--images`` JPEG files (``--source`` pixels, quality 90, smooth random content so they compress like
photographs), saves the default architecture with random weights (6 classes), then measures:

  * plain_ips: the model alone on ready-made input tensors at ``--batch`` (bf16 autocast and channels-last on a GPU,
    as mieruka's predict path runs it), the speed no file-reading path can beat;
  * predict_ips (``--decode device``: JPEGs decoded and resized on the GPU) and predict_cpu_decode_ips
    (``--decode cpu``: Pillow on the CPU's cores): ``mieruka.predict.predict`` over the whole folder, loading the
    model as the command does (a warm-up call first pays the device's own start-up);
  * how far the two decoders' probabilities are apart (largest absolute difference, share of equal classes);
  * where the time goes (``stages_ms_per_image``, on the first 1,024 images in chunks of 256): loading the model,
    reading the files and their headers, the device decoder alone, the whole device store (read, decode, resize),
    inference on stored pixels, and predict's whole per-chunk step.

    python bench/gpu_predict.py [--images 4096] [--source 512x384] [--device auto]

Prints, as its last line, one JSON object with plain_ips, predict_ips, predict_cpu_decode_ips,
predict_vs_plain (predict_ips / plain_ips), the decoders' agreement and the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import default_model

from mieruka.checkpoint import save_checkpoint
from mieruka.inference import select_device
from mieruka.predict import predict


def _write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.save(path, quality=90)


def _model(out: Path, size: int) -> Path:
    model, info = default_model(size, pretrained=False)  # random weights: speed does not depend on them
    return save_checkpoint(out, model, info)


def _plain_ips(model_path: Path, device: torch.device, batch: int, size: int, repeats: int) -> float:
    from mieruka.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(model_path, device)
    model = model.to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            model(x).float().softmax(1).cpu()

    run()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def _stages(folder: Path, model_path: Path, device: torch.device) -> dict[str, float]:
    """Milliseconds per image of each step of predict's chunk, one after another, on the first 1,024 images."""
    from mieruka.data.device_decode import DeviceStore, device_decoder
    from mieruka.data.jpeg import read_for_device as _read
    from mieruka.inference import predict_probs
    from mieruka.model_file import open_model
    from mieruka.predict import PredictOptions, classify_chunk

    paths = sorted(folder.iterdir())[:1024]
    chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    decode = device_decoder(device)
    assert decode is not None
    t0 = time.perf_counter()
    opened = open_model(model_path, str(device))
    model, info = opened.module, opened.info
    sync()
    out = {"load_model_total_ms": 1000 * (time.perf_counter() - t0)}

    def timed(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        fn(chunks[0])  # warm-up
        sync()
        t = time.perf_counter()
        for chunk in chunks:
            fn(chunk)
        sync()
        out[name] = 1000 * (time.perf_counter() - t) / len(paths)

    with ThreadPoolExecutor(8) as pool:
        timed("read_and_header", lambda c: list(pool.map(_read, c)))
        encoded = {p: _read(p) for p in paths}
    timed(
        "decoder_only", lambda c: decode([torch.frombuffer(bytearray(encoded[p] or b""), dtype=torch.uint8) for p in c])
    )
    timed("device_store", lambda c: DeviceStore(c, info.image_size, device))
    store_of = {id(c): DeviceStore(c, info.image_size, device) for c in chunks}
    timed(
        "inference_on_stored_pixels",
        lambda c: predict_probs(model, store_of[id(c)], range(len(c)), mean=info.mean, std=info.std),  # type: ignore[arg-type]
    )
    timed("classify_chunk", lambda c: classify_chunk(opened, c, PredictOptions(decode="device")))
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--source", default="512x384", help="JPEG size WxH (default 512x384)")
    parser.add_argument("--size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed predict runs per decoder (median)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    width, height = (int(v) for v in args.source.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "images"
        folder.mkdir()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: _write_jpeg(folder / f"{i:06d}.jpg", width, height, i), range(args.images)))
        model_path = _model(root / "model.safetensors", args.size)
        result: dict[str, object] = {"images": args.images, "source": args.source, "size": args.size}
        result["plain_ips"] = _plain_ips(model_path, device, args.batch, args.size, 20)
        common = {"device": str(device), "batch_size": args.batch, "progress": False}
        first = sorted(folder.iterdir())[: args.batch]
        runs: dict[str, list[float]] = {"device": [], "cpu": []}
        probs: dict[str, np.ndarray] = {}
        for decode in runs:
            predict(model_path, first, decode=decode, **common)  # type: ignore[arg-type]  # warm-up
        for _ in range(args.repeats):
            for decode, times in runs.items():  # interleaved, so that machine load hits both alike
                t = time.perf_counter()
                out = predict(model_path, [folder], decode=decode, **common)  # type: ignore[arg-type]
                times.append(time.perf_counter() - t)
                probs[decode] = np.array([list(r.probabilities.values()) for r in out])
        result["predict_ips"] = args.images / statistics.median(runs["device"])
        result["predict_cpu_decode_ips"] = args.images / statistics.median(runs["cpu"])
        result["predict_vs_plain"] = result["predict_ips"] / result["plain_ips"]  # type: ignore[operator]
        result["cpu_decode_vs_plain"] = result["predict_cpu_decode_ips"] / result["plain_ips"]  # type: ignore[operator]
        result["decoders_max_prob_diff"] = float(np.abs(probs["device"] - probs["cpu"]).max())
        result["decoders_same_class"] = float((probs["device"].argmax(1) == probs["cpu"].argmax(1)).mean())
        t = time.perf_counter()
        predict(model_path, [folder], decode="device", **{**common, "batch_size": 256})  # type: ignore[arg-type]
        result["predict_batch256_ips"] = args.images / (time.perf_counter() - t)
        result["stages_ms_per_image"] = _stages(folder, model_path, device)
        result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        result["torch"] = torch.__version__
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
