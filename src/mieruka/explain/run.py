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
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mieruka import __version__
from mieruka._io import atomic_write, write_json
from mieruka.batch.engine import EngineOptions, Item, run_items
from mieruka.checkpoint import ModelInfo, load_checkpoint, read_info
from mieruka.data.images import read_image
from mieruka.data.store import ImageStore
from mieruka.errors import DataError, MierukaError
from mieruka.explain.engine import explain, multiscale_layers
from mieruka.explain.inputs import explain_inputs
from mieruka.explain.render import grid, panel, to_original_size
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.spec import MULTISCALE, parse_method_spec
from mieruka.explain.targets import parse_target
from mieruka.inference import batches, model_input, select_device
from mieruka.runtime import is_exported, load_exported

__all__ = ["EXPLAIN_CHUNK", "ExplainRun", "ExplainWorker", "run_explain"]

SCHEMA_VERSION = 1
GRID_PANELS = 24
EXPLAIN_CHUNK = 64
"""Images read and explained per step: memory stays flat however many images there are."""


@dataclass(frozen=True)
class ExplainRun:
    """Where an explain run wrote its files, and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]


def _save_png(path: Path, picture: Image.Image) -> None:
    atomic_write(path, lambda p: picture.save(p, format="PNG"))


class ExplainWorker:
    """The model step of ``explain`` on either engine (:class:`mieruka.batch.engine.Worker`): per image, its maps
    (float32, T × S × S), probabilities and explained classes, or the reason it could not be read."""

    def __init__(
        self,
        model_path: str,
        device: str,
        method: str,
        target: str,
        layers: tuple[str, ...] | None,
        batch_size: int,
        fusion: str = "mean",
    ) -> None:
        self.model_path, self.device, self.method, self.target = model_path, device, method, target
        self.layers, self.batch_size, self.fusion = layers, batch_size, fusion
        self.model: torch.nn.Module | None = None
        self.runtime: Any = None
        self.info: ModelInfo | None = None

    def __getstate__(self) -> dict[str, Any]:  # replicas load their own model
        return {**self.__dict__, "model": None, "runtime": None, "info": None}

    def setup(self) -> None:
        if self.model is None and self.runtime is None:
            if is_exported(self.model_path):
                self.runtime = load_exported(self.model_path)
                self.info = self.runtime.info
                return
            model, self.info, _ = load_checkpoint(self.model_path, select_device(self.device))
            self.model = model.to(memory_format=torch.channels_last)

    def process(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        info = self.info
        assert info is not None, "setup() first"
        store = ImageStore([it.path for it in items], info.image_size, progress=False, bit_depth=info.bit_depth)
        reasons = {b.path: b.reason for b in store.bad}
        records: list[dict[str, Any]] = [{"index": it.index, "error": reasons.get(it.path, "")} for it in items]
        good = [j for j, it in enumerate(items) if it.path not in reasons]
        if self.runtime is not None:
            return self._exported(store, good, records)
        model = self.model
        assert model is not None
        targets = parse_target(self.target, info.classes, info.verdicts)
        dev = next(model.parameters()).device
        for idx in batches(good, self.batch_size, desc="explaining", progress=False):
            x = model_input(store, idx, dev, info.mean, info.std)
            labels = torch.tensor([items[j].label for j in idx], device=dev)
            ex = explain(
                model,
                x,
                method=self.method,
                targets=targets,
                layers=self.layers or (info.target_layer,),
                labels=labels if self.target == "true" else None,
                fusion=self.fusion,
            )
            maps, probs, classes = ex.maps.float().cpu().numpy(), ex.probs.float().cpu().numpy(), ex.class_indices
            for n, j in enumerate(idx):
                records[j].update(maps=maps[n], probs=probs[n], classes=classes[n].tolist(), fast=ex.fast_path)
        return records

    def _exported(self, store: ImageStore, good: list[int], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The exported graph's probabilities and predicted-class heatmap (already min–max scaled per image)."""
        info, runtime = self.info, self.runtime
        assert info is not None and runtime is not None
        for idx in batches(good, self.batch_size, desc="explaining", progress=False):
            x = model_input(store, idx, torch.device("cpu"), info.mean, info.std)
            probs, heat = runtime.run(x.contiguous().numpy())
            assert heat is not None
            for n, j in enumerate(idx):
                top = int(probs[n].argmax())
                records[j].update(maps=heat[n][None].astype("float32"), probs=probs[n], classes=[top], fast=True)
        return records


def _exported_info(
    model_path: str | os.PathLike[str], method: str | None, target: str, layers: Sequence[str] | None
) -> ModelInfo:
    """An exported file's description, once it is clear the file can give what is asked: its own method's map of
    the predicted class."""
    runtime = load_exported(model_path)
    name = Path(model_path).name
    if runtime.method is None:
        raise MierukaError(f"{name}: the exported graph has no heatmap (its head does not allow one)")
    if (method is not None and method != runtime.method) or target != "pred" or layers:
        raise MierukaError(
            f"{name} computes the {runtime.method} map of the predicted class only: explain it with --method "
            f"{runtime.method} --target pred (and no --layer), or explain the .safetensors for other maps"
        )
    return runtime.info


def _method_of(
    model_path: str | os.PathLike[str], method: str | None, target: str, layers: Sequence[str] | None
) -> tuple[ModelInfo, str, Sequence[str] | None, str]:
    """(description, method, layers, fusion) to explain with: an exported file's own method, else ``method`` (a
    spec) or, by default, the one stored with the model."""
    if is_exported(model_path):
        info = _exported_info(model_path, method, target, layers)
        return info, str(load_exported(model_path).method), layers, "mean"
    info = read_info(model_path)
    name, spec_layers, fusion = parse_method_spec(method or info.explain_method)
    return info, name, layers or _resolve_layers(info, spec_layers) or None, fusion


def _resolve_layers(info: ModelInfo, layers: Sequence[str]) -> tuple[str, ...]:
    """A spec's layers with the word ``multiscale`` spelt out for the model's architecture."""
    if tuple(layers) != (MULTISCALE,):
        return tuple(layers)
    from mieruka.models import build_model

    return multiscale_layers(
        build_model(info.arch, len(info.classes), image_size=info.image_size, output_stride=info.output_stride)
    )


def run_explain(
    model_path: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    method: str | None = None,
    target: str = "true",
    split: str = "val",
    layers: Sequence[str] | None = None,
    normalization: str = "per-image",
    alpha: float = 0.5,
    batch_size: int = 16,
    device: str = "auto",
    progress: bool = True,
    strict: bool = False,
    engine: EngineOptions | None = None,
    layout: str | None = None,
) -> ExplainRun:
    """Explain every image of ``sources`` (data sets or image files/folders) and write panels, maps, manifest.

    Images are read, explained and written a chunk at a time (on ``engine``; default: this process): memory does
    not grow with their number. An unreadable image is listed in the manifest with its ``error`` (``strict``: the
    run stops at it); the run fails only when no image could be read.
    """
    engine = engine or EngineOptions()
    info, method, layers, fusion = _method_of(model_path, method, target, layers)
    info = info.with_layout(layout)  # --layout: how the data sets among the sources are laid out
    paths, labels = explain_inputs(sources, info, split, need_labels=target == "true")
    if target == "true" and any(lab is None for lab in labels):
        raise DataError("--target true needs images with known classes (a data set); use --target pred for bare images")
    parse_target(target, info.classes, info.verdicts)  # a bad --target fails before any work
    layer_names = tuple(layers) if layers else (info.target_layer,)
    worker = ExplainWorker(str(model_path), device, method, target, layer_names, batch_size, fusion)
    items = [Item(i, str(p), -1 if lab is None else lab) for i, (p, lab) in enumerate(zip(paths, labels, strict=True))]
    out_dir = Path(out)
    (out_dir / "panels").mkdir(parents=True, exist_ok=True)
    target_names = list(info.classes) if target == "all" else [target]
    caption_extra = f"\n{method}, target: {target_names[0]}" if target not in ("true", "pred") else ""
    writer = _PanelWriter(out_dir, info, items, normalization, alpha, caption_extra)
    chunks = run_items(
        worker,
        items,
        engine=engine,
        chunk=EXPLAIN_CHUNK,
        shard_dir=out_dir / ".ray-shards",
        progress=progress,
        desc=f"explaining ({method})",
    )
    for records in chunks:
        for record in records:
            if strict and record["error"]:
                writer.abort()
                raise DataError(f"{items[record['index']].image}: {record['error']}")
            writer.add(record)
    writer.finish()
    if writer.errors == len(items):
        raise DataError(f"none of the {len(items)} images could be read (the first: {writer.first_error})")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "mieruka_version": __version__,
        "model": str(model_path),
        "method": method,
        "layers": list(layer_names),
        "fusion": fusion,
        "target": target,
        "targets": target_names,
        "split": split,
        "normalization": normalization,
        "fixed_scale": writer.fixed_scale,
        "input_size": info.image_size,
        "output_stride": info.output_stride,  # input pixels per cell of the last block's map
        "maps": "maps.npz",
        "errors": writer.errors,
        "images": writer.records,
    }
    write_json(out_dir / "manifest.json", manifest)
    return ExplainRun(out_dir=out_dir, manifest=manifest)


class _PanelWriter:
    """Panels, the grid, the raw maps and the manifest entries of an explain run, image by image as they come.

    The maps go straight into ``maps.npz`` (a zip written entry by entry). With per-image scaling each panel is drawn
    as its image arrives; with ``fixed`` scaling the shared scale is only known at the end, so the panels are drawn
    then, from the maps read back one at a time.
    """

    def __init__(
        self, out_dir: Path, info: ModelInfo, items: Sequence[Item], normalization: str, alpha: float, caption: str
    ):
        self.out_dir, self.info, self.items = out_dir, info, items
        self.normalization, self.alpha, self.caption_extra = normalization, alpha, caption
        self.maps_path = out_dir / "maps.npz.partial"
        self.zip = zipfile.ZipFile(self.maps_path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.records: list[dict[str, Any]] = []
        self.grid_panels: list[Image.Image] = []
        self.fixed_scale: float | None = None
        self.peak = 0.0
        self.errors = 0
        self.first_error = ""

    def add(self, record: dict[str, Any]) -> None:
        """One worker record: maps (T, S, S), probabilities (C,) and explained classes (T,), or an error."""
        i = record["index"]
        path = self.items[i].path
        if record["error"]:
            self.errors += 1
            self.first_error = self.first_error or f"{path}: {record['error']}"
            self.records.append({"index": i, "file": str(path), "error": record["error"]})
            return
        key = f"{i:05d}"
        maps = record["maps"]
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, maps.astype(np.float16), allow_pickle=False)
        self.peak = max(self.peak, float(maps.max()))
        probs, info = record["probs"], self.info
        pred = int(probs.argmax())
        true = self.items[i].label
        self.records.append(
            {
                "index": i,
                "file": str(path),
                "true": None if true < 0 else info.classes[true],
                "predicted": info.classes[pred],
                "probabilities": {c: round(float(v), 6) for c, v in zip(info.classes, probs, strict=True)},
                "verdict": info.verdicts[info.classes[pred]],
                "explained_class": [None if int(c) < 0 else info.classes[int(c)] for c in record["classes"]],
                "original_size": None,
                "panel": None,
                "map_key": key,
                "fast_path": bool(record["fast"]),
                "error": "",
            }
        )
        if self.normalization != "fixed":
            self._draw(self.records[-1], torch.from_numpy(maps))

    def _draw(self, rec: dict[str, Any], maps: torch.Tensor) -> None:
        """The panel of one manifest entry from its raw maps."""
        path, true = Path(rec["file"]), rec["true"]
        shown = normalize_for_display(maps, self.normalization, self.fixed_scale)  # (T, S, S)
        image = read_image(path, bit_depth=self.info.bit_depth)
        heat = to_original_size(shown[0], image.shape[:2]).numpy()
        pred = rec["predicted"]
        caption = (f"true: {true} / " if true is not None else "") + (
            f"predicted: {pred} (p={rec['probabilities'][pred]:.2f})" + self.caption_extra
        )
        pic = panel(image, heat, caption, alpha=self.alpha)
        panel_path = self.out_dir / "panels" / f"{rec['map_key']}_{path.stem}.png"
        _save_png(panel_path, pic)
        if len(self.grid_panels) < GRID_PANELS:
            self.grid_panels.append(pic)
        rec["original_size"] = [int(image.shape[1]), int(image.shape[0])]
        rec["panel"] = str(panel_path.relative_to(self.out_dir))

    def abort(self) -> None:
        self.zip.close()
        self.maps_path.unlink(missing_ok=True)

    def finish(self) -> None:
        """Close ``maps.npz``; with fixed scaling, draw the panels; write ``grid.png``."""
        self.zip.close()
        final = self.out_dir / "maps.npz"
        os.replace(self.maps_path, final)
        if self.normalization == "fixed":
            self.fixed_scale = self.peak or 1.0
            with np.load(final) as maps:
                for rec in self.records:
                    if not rec["error"]:
                        self._draw(rec, torch.from_numpy(maps[rec["map_key"]].astype(np.float32)))
        if self.grid_panels:
            _save_png(self.out_dir / "grid.png", grid(self.grid_panels, cols=4))
