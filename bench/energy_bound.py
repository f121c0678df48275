"""How much of a map's energy *can* lie inside the defect, at each feature-grid resolution?

    python bench/energy_bound.py ../shared/data/magnetic-tile/manifest.csv --split test [--image-size 256]

A CAM computed on a g × g feature grid reaches the image by bilinear resizing (to the input size, then to the
original size, as the audit does), so each grid cell spreads over a blob of the image. Energy inside,
Σ_region m / Σ m, is a ratio of two linear functions of the non-negative cell weights; its maximum is reached by
one cell alone. For every NG image of the split with a mask, this prints the best single cell's energy inside at
grids of stride 32, 16 and 8: an upper bound for *any* map of that resolution, however well trained. Means and
medians over the images; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from mieruka.data.annotations import read_region
from mieruka.data.dataset import load_dataset
from mieruka.data.images import image_size
from mieruka.errors import MierukaError


def best_cell_energy(mask: torch.Tensor, grid: int, input_size: int) -> float:
    """The largest energy inside ``mask`` (H, W) of one g × g cell's map, resized as the audit resizes maps."""
    h, w = mask.shape
    cells = torch.ones(1, 1, grid, grid, requires_grad=True)
    up = F.interpolate(cells, size=(input_size, input_size), mode="bilinear", align_corners=False)
    up = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    # the adjoint of the resizing: per cell, its map's mass inside the region and in all
    (inside,) = torch.autograd.grad((up * mask).sum(), cells, retain_graph=True)
    (total,) = torch.autograd.grad(up.sum(), cells)
    return float((inside / total).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    try:
        dataset = load_dataset(args.data)
    except MierukaError as exc:
        parser.error(str(exc))
    samples = [s for s in dataset.split(args.split) if s.mask is not None and dataset.verdicts[s.label] == "NG"]
    if not samples:
        parser.error(f"{args.data}: no NG image of the {args.split} split has a mask file")
    out: dict[str, object] = {"split": args.split, "images": len(samples), "image_size": args.image_size}
    for stride in (32, 16, 8):
        grid = args.image_size // stride
        best = []
        for s in samples:
            w, h = image_size(s.image)
            region = torch.from_numpy(read_region(s.mask, s.image, (h, w))).float()
            best.append(best_cell_energy(region, grid, args.image_size))
        mean, median = statistics.mean(best), statistics.median(best)
        print(f"stride {stride:>2} ({grid} x {grid}): best energy inside mean {mean:.3f}, median {median:.3f}")
        out[f"stride{stride}_mean"], out[f"stride{stride}_median"] = round(mean, 4), round(median, 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
