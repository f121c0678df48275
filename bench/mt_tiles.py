"""Show the photographs that look most like given ones, with their labels and splits: one tile under other light.

    python bench/mt_tiles.py ../shared/data/magnetic-tile/manifest.csv exp0_num_797.jpg exp1_num_331149.jpg \
        [--k 7] [--sheet tiles.png]

Magnetic Tile photographs many tiles under up to seven lighting set-ups (``exp0``–``exp6``) and labels each
photograph on its own. Two photographs of one tile share their surface texture whatever the light, so a 96 px grey
copy of each image, scaled to zero mean and unit variance, correlates highly with its siblings. For each image named
(by the end of its path) the script prints its ``--k`` nearest images by that correlation, with label and split, and
``--sheet`` draws them side by side (each contrast-stretched) so that the eye can confirm the same tile. The last
line is one JSON object with the neighbors. This is a look at a few images, not a duplicate finder: many different
tiles also correlate above 0.9 (lighting dominates the grey values), so a neighbor is only a sibling when the
picture confirms it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _grey(path: Path, size: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32)


def _texture(path: Path) -> np.ndarray:
    a = _grey(path, 96)
    a = (a - a.mean()) / (a.std() + 1e-6)
    return a.ravel() / np.sqrt(a.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("images", nargs="+", help="images to look up, by the end of their path")
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--sheet", type=Path, help="write the images and their neighbors to this PNG")
    args = parser.parse_args()

    with args.manifest.open(encoding="utf-8", newline="") as fh:
        rows = [{k: (v or "").strip() for k, v in r.items()} for r in csv.DictReader(fh)]
    root = args.manifest.parent
    feats = np.stack([_texture(root / r["image"]) for r in rows])
    found: dict[str, list[dict[str, object]]] = {}
    for name in args.images:
        i = next((k for k, r in enumerate(rows) if r["image"].endswith(name)), None)
        if i is None:
            parser.error(f"{name}: no image of {args.manifest} ends so")
        sim = feats @ feats[i]
        order = [int(j) for j in np.argsort(-sim) if j != i][: args.k]
        print(f"{rows[i]['image']} ({rows[i]['label']}, {rows[i]['split']}):")
        for j in order:
            print(f"  {sim[j]:.3f}  {rows[j]['image']}  {rows[j]['label']}  {rows[j]['split']}")
        found[rows[i]["image"]] = [
            {
                "image": rows[j]["image"],
                "label": rows[j]["label"],
                "split": rows[j]["split"],
                "r": round(float(sim[j]), 3),
            }
            for j in order
        ]
    if args.sheet:
        side = 200
        sheet = Image.new("L", (side * (args.k + 1), side * len(found)), 0)
        draw = ImageDraw.Draw(sheet)
        for r, (query, near) in enumerate(found.items()):
            q = next(x for x in rows if x["image"] == query)
            cells = [(query, q["label"], q["split"], None)] + [
                (n["image"], n["label"], n["split"], n["r"]) for n in near
            ]
            for c, (path, label, split, corr) in enumerate(cells):
                a = _grey(root / str(path), side)
                lo, hi = np.percentile(a, (1, 99))
                a = np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
                sheet.paste(Image.fromarray(a), (c * side, r * side))
                text = f"{label} / {split}" + ("" if corr is None else f"  r={corr:.2f}")
                draw.text((c * side + 4, r * side + 4), Path(str(path)).stem, fill=255)
                draw.text((c * side + 4, r * side + 16), text, fill=255)
        sheet.save(args.sheet)
        print(f"sheet: {args.sheet}")
    print(json.dumps(found))


if __name__ == "__main__":
    main()
