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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mieruka import __version__
from mieruka._io import atomic_write, write_json
from mieruka.batch.engine import EngineOptions, Item
from mieruka.batch.job import Job, JobOptions, ModelWorker
from mieruka.checkpoint import ModelInfo
from mieruka.data.images import read_image
from mieruka.errors import DataError
from mieruka.explain.inputs import explain_inputs
from mieruka.explain.render import grid, panel, to_original_size
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.spec import MethodSpec
from mieruka.explain.targets import parse_target
from mieruka.inference import batches, model_input
from mieruka.model_file import ModelFile
from mieruka.results import Explanation, Prediction, predictions

__all__ = ["EXPLAIN_CHUNK", "ExplainOptions", "ExplainRun", "ExplainWorker", "run_explain"]

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


@dataclass(frozen=True)
class ExplainOptions:
    """What ``explain`` explains and how (the command's options; :func:`run_explain` takes them as keywords).

    Attributes:
        method: A method spec (:func:`~mieruka.explain.spec.parse_method_spec`); default: the model's stored one
            (an exported file's own).
        target: ``true`` (the paper's experiment), ``pred``, ``ng``, ``all`` or a class name.
        split: The split of a data set among the sources.
        layers: Layers that replace the spec's.
        normalization: Display scaling of the panels: ``per-image`` or ``fixed`` (one scale for the run).
        alpha: Opacity of the heatmap over the image.
        batch_size: Images per batch.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Show progress bars.
        strict: Stop at the first unreadable image (default: it is listed with its error in the manifest).
        engine: Where the model runs (:class:`~mieruka.batch.engine.EngineOptions`).
        layout: How the data sets among the sources are laid out (``--layout``; default: as the model was trained).
    """

    method: str | None = None
    target: str = "true"
    split: str = "val"
    layers: Sequence[str] | None = None
    normalization: str = "per-image"
    alpha: float = 0.5
    batch_size: int = 16
    device: str = "auto"
    progress: bool = True
    strict: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    layout: str | None = None


class ExplainWorker(ModelWorker):
    """The model step of ``explain`` on either engine: per image, its :class:`~mieruka.results.Explanation` (maps
    T × S × S, prediction, explained classes), or the reason it could not be read."""

    def __init__(self, model_path: str, device: str, given: str, spec: MethodSpec, target: str, batch_size: int):
        super().__init__(model_path, device)
        self.given, self.spec, self.target, self.batch_size = given, spec, target, batch_size

    def process(self, items: Sequence[Item]) -> list[Explanation]:
        model, info = self.model, self.info
        store, reasons = self.read(items)
        t, method = info.decision_threshold, self.given
        out = [Explanation(Prediction.unreadable(it.image, reasons[it.path], t), method, self.target)
               if it.path in reasons else None for it in items]  # fmt: skip
        good = [j for j, it in enumerate(items) if it.path not in reasons]
        targets = parse_target(self.target, info.classes, info.verdicts) if model.module is not None else "pred"
        for idx in batches(good, self.batch_size, desc="explaining", progress=False):
            x = model_input(store, idx, model.device, info.mean, info.std)
            labels = torch.tensor([items[j].label for j in idx], device=model.device) if self.target == "true" else None
            ex = model.explain(x, self.spec, targets, labels)
            maps, probs, classes = ex.maps.float().cpu().numpy(), ex.probs.float().cpu().numpy(), ex.class_indices
            found = predictions([items[j].image for j in idx], probs, info.classes, info.ng_classes, t)
            for n, j in enumerate(idx):
                explained = tuple(None if int(c) < 0 else info.classes[int(c)] for c in classes[n].tolist())
                out[j] = Explanation(found[n], method, self.target, maps[n], explained, store.sizes[j], ex.fast_path)
        return [e for e in out if e is not None]


def run_explain(
    model_path: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    **options: Any,
) -> ExplainRun:
    """Explain every image of ``sources`` (data sets or image files/folders) and write panels, maps, manifest;
    ``options``: :class:`ExplainOptions`' fields (``method=…``, ``target=…``…).

    Images are read, explained and written a chunk at a time (on ``engine``; default: this process): memory does
    not grow with their number. An unreadable image is listed in the manifest with its ``error`` (``strict``: the
    run stops at it); the run fails only when no image could be read.
    """
    o = ExplainOptions(**options)
    file = ModelFile.read(model_path)
    file.check_request("explain", methods=[o.method] if o.method else None, target=o.target,
                       extra="--layer" if o.layers else "")  # fmt: skip
    given = o.method or file.stored_method
    spec = file.resolve(given)
    if o.layers:
        spec = spec._replace(layers=tuple(o.layers))
    info = file.info.with_layout(o.layout)  # --layout: how the data sets among the sources are laid out
    target = o.target
    paths, labels = explain_inputs(sources, info, o.split, need_labels=target == "true")
    if target == "true" and any(lab is None for lab in labels):
        raise DataError("--target true needs images with known classes (a data set); use --target pred for bare images")
    parse_target(target, info.classes, info.verdicts)  # a bad --target fails before any work
    worker = ExplainWorker(str(model_path), o.device, given, spec, target, o.batch_size)
    items = [Item(i, str(p), -1 if lab is None else lab) for i, (p, lab) in enumerate(zip(paths, labels, strict=True))]
    out_dir = Path(out)
    (out_dir / "panels").mkdir(parents=True, exist_ok=True)
    target_names = list(info.classes) if target == "all" else [target]
    caption_extra = f"\n{spec.method}, target: {target_names[0]}" if target not in ("true", "pred") else ""
    writer = _PanelWriter(out_dir, info, o.normalization, o.alpha, caption_extra)
    job = Job(
        worker, items, lambda e: e.error, what="explaining", chunk=EXPLAIN_CHUNK, shard_dir=out_dir / ".ray-shards"
    )
    try:
        for pairs in job.chunks(JobOptions(o.engine, o.progress, o.strict), desc=f"explaining ({spec.method})"):
            for item, explanation in pairs:
                writer.add(item, explanation)
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    job.check_some_read()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "mieruka_version": __version__,
        "model": str(model_path),
        "method": spec.method,
        "layers": list(spec.layers),
        "fusion": spec.fusion,
        "target": target,
        "targets": target_names,
        "split": o.split,
        "normalization": o.normalization,
        "fixed_scale": writer.fixed_scale,
        "input_size": info.image_size,
        "output_stride": info.output_stride,  # input pixels per cell of the last block's map
        "maps": "maps.npz",
        "errors": job.errors,
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

    def __init__(self, out_dir: Path, info: ModelInfo, normalization: str, alpha: float, caption: str):
        self.out_dir, self.info = out_dir, info
        self.normalization, self.alpha, self.caption_extra = normalization, alpha, caption
        self.maps_path = out_dir / "maps.npz.partial"
        self.zip = zipfile.ZipFile(self.maps_path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.records: list[dict[str, Any]] = []
        self.grid_panels: list[Image.Image] = []
        self.fixed_scale: float | None = None
        self.peak = 0.0

    def add(self, item: Item, ex: Explanation) -> None:
        """One image's explanation (maps T × S × S), or its error."""
        i, path = item.index, item.image
        if ex.error:
            self.records.append({"index": i, "file": path, "error": ex.error})
            return
        key = f"{i:05d}"
        maps = ex.maps
        assert maps is not None
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, maps.astype(np.float16), allow_pickle=False)
        self.peak = max(self.peak, float(maps.max()))
        p, info = ex.prediction, self.info
        self.records.append(
            {
                "index": i,
                "file": path,
                "true": None if item.label < 0 else info.classes[item.label],
                "predicted": p.label,
                "probabilities": {c: round(v, 6) for c, v in p.probabilities.items()},
                "verdict": info.verdicts[p.label],
                "explained_class": list(ex.explained),
                "original_size": None,
                "panel": None,
                "map_key": key,
                "fast_path": ex.fast_path,
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
