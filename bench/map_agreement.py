"""Does the line show the map the audit measured? The checkpoint's stored explanation against the exported graph's
heatmap, image by image.

    python bench/map_agreement.py MODEL.safetensors DATA [--split test] [--limit 270] [--method SPEC]

Exports MODEL to ONNX as ``mieruka export`` does (the graph computes the stored method where it can, else the best
candidate it can compute), then, for every image of the split, explains it with the stored method (``--method``:
another spec) through the checkpoint, as ``explain`` and ``audit`` do, and runs the graph. Both maps are of the
predicted class, at the model's input size, scaled per image to 0–1. Prints the mean and the minimum Pearson
correlation over the images and, as its last line, one JSON object: ``stored_method``, ``graph_method``,
``mean_correlation``, ``min_correlation``, ``images``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from _shared import cpu_description

from mieruka.checkpoint import load_checkpoint
from mieruka.data.images import read_image
from mieruka.explain.engine import explain, multiscale_layers
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.spec import MULTISCALE, parse_method_spec
from mieruka.export import export_onnx
from mieruka.runtime import OnnxModel, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    parser.add_argument("--method", help="the checkpoint's method spec (default: the stored one)")
    args = parser.parse_args()
    model, info, _ = load_checkpoint(args.model)
    spec = args.method or info.explain_method
    name, layers, fusion = parse_method_spec(spec)
    if layers == (MULTISCALE,):
        layers = multiscale_layers(model)
    samples = info.load_dataset(args.data).split(args.split)
    samples = samples[: args.limit] if args.limit else samples
    with tempfile.TemporaryDirectory() as tmp:
        graph = OnnxModel(export_onnx(args.model, Path(tmp) / "m.onnx").path)
        correlations = []
        for start in range(0, len(samples), 16):
            x = prepare([read_image(s.image, bit_depth=info.bit_depth) for s in samples[start : start + 16]], info)
            _, heat = graph.run(x)
            ours = explain(model, torch.from_numpy(x), method=name, layers=layers or None, fusion=fusion)
            ref = normalize_for_display(ours.maps[:, 0]).numpy()
            assert heat is not None
            for a, b in zip(heat, ref, strict=True):
                correlations.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
    result = {
        "stored_method": spec,
        "graph_method": graph.method,
        "mean_correlation": round(float(np.mean(correlations)), 4),
        "min_correlation": round(float(np.min(correlations)), 4),
        "images": len(correlations),
        "split": args.split,
        "machine": cpu_description(),
    }
    print(f"{spec} (checkpoint) against {graph.method} (graph): mean correlation {result['mean_correlation']}, "
          f"min {result['min_correlation']} over {len(correlations)} images")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
