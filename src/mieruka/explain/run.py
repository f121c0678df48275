"""``mieruka explain MODEL DATA_OR_IMAGES --out DIR``: heatmaps and the paper's panels for many images.

By default it reproduces the paper's experiment: every validation image, the map of its *true* class, and a panel
captioned "true: X / predicted: Y (p=…)". It writes

* ``DIR/panels/NNNNN_<stem>.png`` — input | overlay panels at the original aspect ratio;
* ``DIR/maps.npz`` — the raw maps (float16, model input resolution, before display normalization), one array
  (T, S, S) per image under the key ``NNNNN``;
* ``DIR/grid.png`` — the first panels on one sheet;
* ``DIR/manifest.json`` — method, layers, target, normalization and, per image, file, classes, probabilities,
  original size and output files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mieruka import __version__
from mieruka._io import atomic_write, write_json
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.data.images import read_image
from mieruka.data.store import ImageStore, normalize
from mieruka.errors import DataError
from mieruka.explain.engine import explain
from mieruka.explain.render import grid, normalize_for_display, panel, to_original_size
from mieruka.explain.targets import parse_target
from mieruka.inference import select_device

__all__ = ["ExplainRun", "run_explain"]

SCHEMA_VERSION = 1
GRID_PANELS = 24


@dataclass(frozen=True)
class ExplainRun:
    """Where an explain run wrote its files, and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]


def _is_dataset(path: Path, info: ModelInfo) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    subdirs = {p.name for p in path.iterdir() if p.is_dir() and p.name != "masks" and not p.name.startswith(".")}
    return bool(subdirs) and subdirs <= set(info.classes)


def _inputs(
    sources: Sequence[str | os.PathLike[str]], info: ModelInfo, split: str
) -> tuple[list[Path], list[int | None]]:
    """Image paths and true class indices (None where unknown)."""
    from mieruka.predict import collect_images

    paths: list[Path] = []
    labels: list[int | None] = []
    for src in sources:
        p = Path(src)
        if _is_dataset(p, info):
            ds = info.load_dataset(p)
            samples = ds.split(split)
            if not samples:
                raise DataError(f"{p}: the {split} split is empty")
            paths += [s.image for s in samples]
            labels += [ds.label_index(s) for s in samples]
        else:
            found = collect_images([p])
            paths += found
            labels += [None] * len(found)
    return paths, labels


def _save_png(path: Path, picture: Image.Image) -> None:
    atomic_write(path, lambda p: picture.save(p, format="PNG"))


def run_explain(
    model_path: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    target: str = "true",
    split: str = "val",
    layers: Sequence[str] | None = None,
    normalization: str = "per-image",
    alpha: float = 0.5,
    batch_size: int = 16,
    device: str = "auto",
    progress: bool = True,
) -> ExplainRun:
    """Explain every image of ``sources`` (data sets or image files/folders) and write panels, maps, manifest."""
    model, info, _ = load_checkpoint(model_path, select_device(device))
    paths, labels = _inputs(sources, info, split)
    if target == "true" and any(lab is None for lab in labels):
        raise DataError("--target true needs images with known classes (a data set); use --target pred for bare images")
    targets = parse_target(target, info.classes, info.verdicts)
    layer_names = tuple(layers) if layers else (info.target_layer,)
    store = ImageStore(paths, info.image_size, progress=progress).require_readable()

    out_dir = Path(out)
    (out_dir / "panels").mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.channels_last)
    dev = next(model.parameters()).device
    maps_out: dict[str, np.ndarray] = {}
    records: list[dict[str, Any]] = []
    panels_for_grid: list[Image.Image] = []
    fixed_scale: float | None = None
    results = []
    for start in tqdm(
        range(0, len(paths), batch_size), desc=f"explaining ({method})", disable=not progress, unit="batch", leave=False
    ):
        idx = list(range(start, min(start + batch_size, len(paths))))
        x = normalize(store.get(idx).to(dev), info.mean, info.std).contiguous(memory_format=torch.channels_last)
        lab = [labels[i] for i in idx]
        lab_t = torch.tensor([-1 if v is None else v for v in lab], device=dev)
        ex = explain(
            model, x, method=method, targets=targets, layers=layer_names, labels=lab_t if target == "true" else None
        )
        results.append((idx, ex.maps.float().cpu(), ex.probs.float().cpu(), ex.class_indices.cpu(), ex.fast_path))
    if normalization == "fixed":
        fixed_scale = max(float(m.max()) for _, m, _, _, _ in results) or 1.0

    target_names = list(info.classes) if target == "all" else [target]
    for idx, maps, probs, class_idx, fast in results:
        for j, i in enumerate(idx):
            path = paths[i]
            key = f"{i:05d}"
            maps_out[key] = maps[j].numpy().astype(np.float16)
            pred = int(probs[j].argmax())
            true = labels[i]
            shown = normalize_for_display(maps[j], normalization, fixed_scale)  # (T, S, S)
            image = read_image(path)
            heat = to_original_size(shown[0], image.shape[:2]).numpy()
            caption = (
                f"true: {info.classes[true]} / " if true is not None else ""
            ) + f"predicted: {info.classes[pred]} (p={float(probs[j, pred]):.2f})"
            if target not in ("true", "pred"):
                caption += f"\n{method}, target: {target_names[0]}"
            pic = panel(image, heat, caption, alpha=alpha)
            panel_path = out_dir / "panels" / f"{key}_{path.stem}.png"
            _save_png(panel_path, pic)
            if len(panels_for_grid) < GRID_PANELS:
                panels_for_grid.append(pic)
            records.append(
                {
                    "index": i,
                    "file": str(path),
                    "true": None if true is None else info.classes[true],
                    "predicted": info.classes[pred],
                    "probabilities": {c: round(float(v), 6) for c, v in zip(info.classes, probs[j], strict=True)},
                    "verdict": info.verdicts[info.classes[pred]],
                    "explained_class": [None if int(c) < 0 else info.classes[int(c)] for c in class_idx[j]],
                    "original_size": [int(image.shape[1]), int(image.shape[0])],
                    "panel": str(panel_path.relative_to(out_dir)),
                    "map_key": key,
                    "fast_path": bool(fast),
                }
            )

    def _save_maps(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez_compressed(fh, **maps_out)  # type: ignore[arg-type]

    atomic_write(out_dir / "maps.npz", _save_maps)
    if panels_for_grid:
        sheet = grid(panels_for_grid, cols=4)
        _save_png(out_dir / "grid.png", sheet)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "mieruka_version": __version__,
        "model": str(model_path),
        "method": method,
        "layers": list(layer_names),
        "target": target,
        "targets": target_names,
        "split": split,
        "normalization": normalization,
        "fixed_scale": fixed_scale,
        "input_size": info.image_size,
        "maps": "maps.npz",
        "images": records,
    }
    write_json(out_dir / "manifest.json", manifest)
    return ExplainRun(out_dir=out_dir, manifest=manifest)
