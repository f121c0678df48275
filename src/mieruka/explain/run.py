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

from mieruka import __version__
from mieruka._io import atomic_write, write_json
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.data.images import IMAGE_EXTENSIONS, read_image
from mieruka.data.sample import nfc
from mieruka.data.sources.folder import MASKS_DIR
from mieruka.data.store import ImageStore
from mieruka.errors import DataError
from mieruka.explain.engine import explain
from mieruka.explain.render import grid, panel, to_original_size
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.targets import parse_target
from mieruka.inference import batches, model_input, select_device

__all__ = ["ExplainRun", "run_explain"]

SCHEMA_VERSION = 1
GRID_PANELS = 24


@dataclass(frozen=True)
class ExplainRun:
    """Where an explain run wrote its files, and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]


def _class_folders(path: Path) -> set[str]:
    """The (NFC) names of a folder's subfolders that could be classes: not hidden, not the masks tree."""
    return {nfc(p.name) for p in path.iterdir() if p.is_dir() and p.name != MASKS_DIR and not p.name.startswith(".")}


def _is_dataset(path: Path, info: ModelInfo, need_labels: bool) -> bool:
    """A manifest, or a folder whose subfolders are classes of the model. With ``need_labels``, a folder laid out
    as class folders (subfolders, no image at its top level) whose names are not the model's is an error naming
    them, rather than a folder of unlabelled images."""
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    folders = _class_folders(path)
    classes = {nfc(c) for c in info.classes}
    if folders and folders <= classes:
        return True
    loose = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    if need_labels and folders and not loose:
        raise DataError(
            f"{path}: its class folders {', '.join(sorted(folders - classes))} are not classes of the model "
            f"({', '.join(info.classes)}); explain a data set of the model's classes, or use --target pred"
        )
    return False


def _inputs(
    sources: Sequence[str | os.PathLike[str]], info: ModelInfo, split: str, need_labels: bool
) -> tuple[list[Path], list[int | None]]:
    """Image paths and true class indices (None where unknown)."""
    from mieruka.predict import collect_images

    paths: list[Path] = []
    labels: list[int | None] = []
    for src in sources:
        p = Path(src)
        if _is_dataset(p, info, need_labels):
            dataset = info.load_dataset(p)
            samples = dataset.split(split)
            if not samples:
                raise DataError(f"{p}: the {split} split is empty")
            paths += [s.image for s in samples]
            labels += [dataset.label_index(s) for s in samples]
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
    paths, labels = _inputs(sources, info, split, need_labels=target == "true")
    if target == "true" and any(lab is None for lab in labels):
        raise DataError("--target true needs images with known classes (a data set); use --target pred for bare images")
    targets = parse_target(target, info.classes, info.verdicts)
    layer_names = tuple(layers) if layers else (info.target_layer,)
    store = ImageStore(paths, info.image_size, progress=progress, bit_depth=info.bit_depth).require_readable()
    model = model.to(memory_format=torch.channels_last)
    dev = next(model.parameters()).device
    results = []
    for idx in batches(list(range(len(paths))), batch_size, desc=f"explaining ({method})", progress=progress):
        x = model_input(store, idx, dev, info.mean, info.std)
        lab_t = torch.tensor([-1 if labels[i] is None else labels[i] for i in idx], device=dev)
        ex = explain(
            model, x, method=method, targets=targets, layers=layer_names, labels=lab_t if target == "true" else None
        )
        results.append((idx, ex.maps.float().cpu(), ex.probs.float().cpu(), ex.class_indices.cpu(), ex.fast_path))
    fixed_scale = None
    if normalization == "fixed":
        fixed_scale = max(float(m.max()) for _, m, _, _, _ in results) or 1.0
    out_dir = Path(out)
    (out_dir / "panels").mkdir(parents=True, exist_ok=True)
    target_names = list(info.classes) if target == "all" else [target]
    caption_extra = f"\n{method}, target: {target_names[0]}" if target not in ("true", "pred") else ""
    writer = _PanelWriter(out_dir, info, paths, labels, normalization, fixed_scale, alpha, caption_extra)
    for idx, maps, probs, class_idx, fast in results:
        for j, i in enumerate(idx):
            writer.add(i, maps[j], probs[j], class_idx[j], fast)
    writer.finish()
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
        "images": writer.records,
    }
    write_json(out_dir / "manifest.json", manifest)
    return ExplainRun(out_dir=out_dir, manifest=manifest)


class _PanelWriter:
    """Panels, the grid and the raw maps of an explain run, image by image."""

    def __init__(
        self,
        out_dir: Path,
        info: ModelInfo,
        paths: Sequence[Path],
        labels: Sequence[int | None],
        normalization: str,
        fixed_scale: float | None,
        alpha: float,
        caption_extra: str,
    ):
        self.out_dir, self.info, self.paths, self.labels = out_dir, info, paths, labels
        self.normalization, self.fixed_scale, self.alpha, self.caption_extra = (
            normalization,
            fixed_scale,
            alpha,
            caption_extra,
        )
        self.maps: dict[str, np.ndarray] = {}
        self.records: list[dict[str, Any]] = []
        self.grid_panels: list[Image.Image] = []

    def add(self, i: int, maps: torch.Tensor, probs: torch.Tensor, class_idx: torch.Tensor, fast: bool) -> None:
        """Image ``i``: its maps (T, S, S), probabilities (C,) and explained classes (T,)."""
        info, path, true = self.info, self.paths[i], self.labels[i]
        key = f"{i:05d}"
        self.maps[key] = maps.numpy().astype(np.float16)
        pred = int(probs.argmax())
        shown = normalize_for_display(maps, self.normalization, self.fixed_scale)  # (T, S, S)
        image = read_image(path, bit_depth=info.bit_depth)
        heat = to_original_size(shown[0], image.shape[:2]).numpy()
        caption = (f"true: {info.classes[true]} / " if true is not None else "") + (
            f"predicted: {info.classes[pred]} (p={float(probs[pred]):.2f})" + self.caption_extra
        )
        pic = panel(image, heat, caption, alpha=self.alpha)
        panel_path = self.out_dir / "panels" / f"{key}_{path.stem}.png"
        _save_png(panel_path, pic)
        if len(self.grid_panels) < GRID_PANELS:
            self.grid_panels.append(pic)
        self.records.append(
            {
                "index": i,
                "file": str(path),
                "true": None if true is None else info.classes[true],
                "predicted": info.classes[pred],
                "probabilities": {c: round(float(v), 6) for c, v in zip(info.classes, probs, strict=True)},
                "verdict": info.verdicts[info.classes[pred]],
                "explained_class": [None if int(c) < 0 else info.classes[int(c)] for c in class_idx],
                "original_size": [int(image.shape[1]), int(image.shape[0])],
                "panel": str(panel_path.relative_to(self.out_dir)),
                "map_key": key,
                "fast_path": bool(fast),
            }
        )

    def finish(self) -> None:
        """Write ``maps.npz`` and ``grid.png``."""

        def save_maps(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez_compressed(fh, **self.maps)  # type: ignore[arg-type]

        atomic_write(self.out_dir / "maps.npz", save_maps)
        if self.grid_panels:
            _save_png(self.out_dir / "grid.png", grid(self.grid_panels, cols=4))
