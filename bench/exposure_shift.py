"""How a model's accuracy holds when the exposure changes: contrast and brightness shifts of one split's images.

    python bench/exposure_shift.py MODEL.safetensors DATA [--split val] [--model OTHER.safetensors ...]

Each image's pixels (0–1) become ``(x - mean) * c + mean + b``, its own mean kept, which is the brightness/contrast
change the training augmentation draws; contrast 0.4 is about the darkest of Magnetic Tile's seven exposures
relative to the median one. Several models are compared on the same shifted images. Prints a table (accuracy and
balanced accuracy per shift, per model) and, as its last line, one JSON object with every figure. Use the
validation split to compare settings; the test split only to report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mieruka.checkpoint import load_checkpoint
from mieruka.data.dataset import load_dataset
from mieruka.data.store import ImageStore, normalize
from mieruka.metrics import classification_metrics

SHIFTS = [(0.4, 0.0), (0.6, 0.0), (1.0, 0.0), (1.4, 0.0), (1.0, -0.2), (1.0, 0.2), (0.4, -0.2)]


@torch.no_grad()
def _predict(model: torch.nn.Module, pixels: torch.Tensor, c: float, b: float, mean, std, batch: int = 32):
    out = []
    for i in range(0, len(pixels), batch):
        x = pixels[i : i + batch].float().div_(255)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * c + m + b).clamp(0, 1)
        out.append(model(normalize(x, mean, std)).argmax(1))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="+")
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = {}
    for path in args.model:
        model, info, _ = load_checkpoint(path)
        dataset = load_dataset(args.data, ok_classes=[c for c, v in info.verdicts.items() if v == "OK"])
        samples = dataset.split(args.split)
        store = ImageStore([s.image for s in samples], info.image_size, progress=False).require_readable()
        pixels = store.get(range(len(samples)))
        y = np.array([info.classes.index(s.label) for s in samples])
        rows = {}
        for c, b in SHIFTS:
            pred = _predict(model, pixels, c, b, info.mean, info.std)
            m = classification_metrics(y, pred, info.classes)
            rows[f"c{c:g} b{b:+g}"] = {
                "accuracy": round(m["accuracy"], 4),
                "balanced_accuracy": round(m["balanced_accuracy"], 4),
            }
        results[str(path)] = rows
    names = list(next(iter(results.values())))
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for path, rows in results.items():
        cells = [f"{rows[n]['accuracy']:.3f} / {rows[n]['balanced_accuracy']:.3f}" for n in names]
        print(f"| {path} | " + " | ".join(cells) + " |")
    print(json.dumps({"split": args.split, "results": results}))


if __name__ == "__main__":
    main()
