"""Where a service request's time goes, step by step, in this process (no HTTP): median milliseconds per step.

    python bench/serve_parts.py [--model MODEL.onnx] [--sizes 224 480] [--repeats 50]

Steps, as ``POST /v1/predict`` runs them for one PNG upload: decode, prepare (resize + normalize), the ONNX Runtime
call (probabilities + heatmap), the overlay (the service's 8-bit path, and for comparison the float path that the
explanation panels use), the PNG encoding (with ISA-L's deflate when installed, and with zlib), base64 + JSON.
One thread, one request at a time. Prints, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description, default_onnx, median_time

from mieruka.data.images import decode_image
from mieruka.data.synth import make_image
from mieruka.explain import render
from mieruka.runtime import OnnxModel, prepare


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    return round(1000 * median_time(fn, repeats), 3)


def _steps(runtime: OnnxModel, side: int, repeats: int) -> dict[str, float | None]:
    gray, _ = make_image("crack", np.random.default_rng(0), side)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(buf, "PNG")
    data = buf.getvalue()
    image = decode_image(data, "upload.png")
    x = prepare([image], runtime.info)
    heat = runtime.run(x)[1]
    if heat is None:
        raise SystemExit("the model has no heatmap output")
    hw = image.shape[:2]
    picture = render.overlay_at(image, heat[0], hw)
    encoded = render.encode_png(picture)

    def float_overlay() -> object:
        return render.overlay(image, render.to_original_size(torch.from_numpy(heat[0]), hw).clamp(0, 1).numpy())

    png_isal = _median_ms(lambda: render.encode_png(picture), repeats) if render._isal_zlib() else None
    original = render._isal_zlib
    render._isal_zlib = lambda: None  # type: ignore[assignment]  # zlib, as without the serve extra
    try:
        png_zlib = _median_ms(lambda: render.encode_png(picture), repeats)
    finally:
        render._isal_zlib = original  # type: ignore[method-assign]
    return {
        "decode": _median_ms(lambda: decode_image(data, "upload.png"), repeats),
        "prepare": _median_ms(lambda: prepare([image], runtime.info), repeats),
        "onnxruntime": _median_ms(lambda: runtime.run(x), repeats),
        "overlay": _median_ms(lambda: render.overlay_at(image, heat[0], hw), repeats),
        "overlay_float_path": _median_ms(float_overlay, repeats),
        "png": png_isal,
        "png_zlib": png_zlib,
        "png_kib": round(len(encoded) / 1024, 1),
        "base64_json": _median_ms(
            lambda: json.dumps({"overlay_png": base64.b64encode(encoded).decode("ascii")}), repeats
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help=".onnx file (default: the default model, exported now)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 480], help="square upload sizes")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the service sets it beside ONNX Runtime

    results: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runtime = OnnxModel(args.model or default_onnx(Path(tmp) / "model.onnx"))
        for side in args.sizes:
            results[f"{side}px"] = _steps(runtime, side, args.repeats)
            print(f"{side} px: {results[f'{side}px']}", flush=True)
    deflate = "isal" if render._isal_zlib() else "zlib"
    print(json.dumps({"steps_ms": results, "deflate": deflate, "device": cpu_description()}))


if __name__ == "__main__":
    main()
