"""``--method auto``: choose the explanation method on the user's own validation regions.

No single recipe fits every surface: a product of multi-scale maps is sharp and wins on tiny blowholes, but breaks
into dots on defects that cover half the image, where plain Grad-CAM's smooth map ranks pixels better. So the
method is chosen per model, on the **validation** split (never the test split), among :func:`candidates`, in order
of simplicity. ``auto`` (the default) chooses among the maps the exported graph computes — so that what the audit
measures is what ``export``, ``serve`` and OpenVINO show on the line:

1. ``gradcam`` — Grad-CAM on the last block (the seed study's method);
2. ``gradcam++`` — Grad-CAM++ on the last block;
3. ``layercam`` — LayerCAM on the last block (only the positive head weights count).

``auto-all`` adds the maps that need earlier layers (``explain`` and ``audit`` compute them; a graph cannot):

4. ``gradcam:<stage>`` — Grad-CAM on the last stage of stride 16 (an earlier, finer map), where the model has one;
5. ``layercam:multiscale/mean`` — LayerCAM on every stage from stride 8 plus the last block, averaged;
6. ``layercam:multiscale/product`` — the same, multiplied (sharp: evidence must agree at every scale).

Every candidate explains the model's predicted class on every validation image of an NG class that has a marked
region; the winner has the highest mean average precision (AP ranks pixels, so sharp and smooth maps compare on the
same footing). Candidates within :data:`TIE` of the best count as tied, and a tie goes to the simpler method — so
the winner's AP is never below plain Grad-CAM's. With no region on the validation split, Grad-CAM is kept and the
selection says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from mieruka.audit.options import AuditOptions
from mieruka.audit.worker import AuditJob, AuditWorker
from mieruka.batch.work import Item
from mieruka.checkpoint import load_checkpoint, save_checkpoint
from mieruka.errors import MierukaError
from mieruka.explain.spec import AUTO_CHOICES
from mieruka.model_file import ModelFile

__all__ = [
    "AUTO_CHOICES",
    "DEFAULT_METHOD",
    "SELECTION_METRICS",
    "TIE",
    "candidates",
    "method_after_training",
    "select_method",
    "store_selection",
]

DEFAULT_METHOD = "gradcam"
"""What a model without a choice explains with, and what ``auto`` keeps where validation has no regions."""

TIE = 0.005
"""Validation APs closer than this to the best count as tied (and the simpler method wins)."""

SELECTION_METRICS = ("average_precision", "energy_inside", "pointing_hit", "relevance_rank", "iou_at_area")
"""The figures the selection table reports per candidate (means over the validation defect images)."""

_CHUNK = 64


def candidates(model: nn.Module, final: str, scope: str = "auto") -> list[str]:
    """The candidate method specs for ``model``, whose last block is ``final``, simplest first (see the module
    docstring): ``auto`` the graph's, ``auto-all`` every one."""
    specs = ["gradcam", "gradcam++", "layercam"]
    if scope == "auto":
        return specs
    stages = [i["module"] for i in getattr(model, "feature_info", None) or [] if i.get("reduction") == 16]
    if stages and stages[-1] != final:
        specs.append(f"gradcam:{stages[-1]}")
    return [*specs, "layercam:multiscale/mean", "layercam:multiscale/product"]


def select_method(
    model_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    options: AuditOptions | None = None,
    *,
    split: str = "val",
    scope: str = "auto",
) -> dict[str, Any]:
    """Score every candidate of ``scope`` (:data:`AUTO_CHOICES`) on ``split``'s defect regions and choose one (the
    module docstring says how). Of ``options`` it uses the device, batch size, boxes, layout, thresholds and
    progress bar.

    Returns:
        ``{"split", "images", "candidates": [{"method", <SELECTION_METRICS>}], "chosen", "reason"}``.
    """
    o = options or AuditOptions()
    file = ModelFile.read(model_path)
    if file.exported:
        raise MierukaError(
            f"--method auto: {file.path.name} is an exported graph that computes one method only; choose "
            "among methods with the .safetensors model"
        )
    boxes = o.boxes
    job = AuditJob(o.config, boxes=None if boxes is None else str(boxes))
    worker = AuditWorker(str(model_path), o.device, specs={}, target="pred", batch_size=o.batch_size, job=job)
    worker.setup()  # the model is loaded once: its stages name the candidates, then it scores them
    info = worker.info.with_layout(o.layout)
    module = worker.model.module
    assert module is not None
    worker.specs = {name: file.resolve(name) for name in candidates(module, info.target_layer, scope)}
    dataset = info.load_dataset(data)
    samples = [s for s in dataset.split(split) if info.verdicts[s.label] == "NG"]
    if boxes is None:
        samples = [s for s in samples if s.mask is not None]
    else:
        from mieruka.data.annotations import box_source

        samples = [s for s in samples if box_source(Path(boxes), s.image) is not None]
    items = [Item(i, str(s.image), dataset.label_index(s), "" if s.mask is None else str(s.mask)) for i, s in
             enumerate(samples)]  # fmt: skip
    return {**_choose(split, _score(worker, items, o.progress)), "scope": scope}


def _score(worker: AuditWorker, items: Sequence[Item], progress: bool) -> tuple[int, list[dict[str, Any]]]:
    """(images with a region, per candidate the mean of :data:`SELECTION_METRICS` over them)."""
    specs = list(worker.specs)
    sums = {s: dict.fromkeys(SELECTION_METRICS, 0.0) for s in specs}
    counted = 0
    chunks = range(0, len(items), _CHUNK)
    for start in tqdm(chunks, desc="choosing the method", disable=not progress, leave=False, unit="chunk"):
        for record in worker.process(items[start : start + _CHUNK]):
            rows = [r for r in record.rows if r["energy_inside"] is not None]
            if len(rows) != len(specs):
                continue
            counted += 1
            for r in rows:
                for k in SELECTION_METRICS:
                    sums[r["method"]][k] += float(r[k])
    table = [{"method": s, **{k: (v / counted if counted else None) for k, v in sums[s].items()}} for s in specs]
    return counted, table


def _choose(split: str, scored: tuple[int, list[dict[str, Any]]]) -> dict[str, Any]:
    images, table = scored
    out: dict[str, Any] = {"split": split, "images": images, "candidates": table, "tie": TIE}
    if images == 0:
        out["chosen"] = DEFAULT_METHOD
        out["reason"] = (
            f"no NG image of the {split} split has a marked region, so nothing can be compared; kept "
            f"{DEFAULT_METHOD} (the seed study's method)"
        )
        return out
    best = max(c["average_precision"] for c in table)
    winner = next(c for c in table if c["average_precision"] >= best - TIE)
    base = next(c for c in table if c["method"] == DEFAULT_METHOD)
    out["chosen"] = winner["method"]
    ap = winner["average_precision"]
    if winner["method"] == DEFAULT_METHOD:
        why = "the highest" if ap == best else f"within {TIE} of the best ({best:.3f}) and the simplest:"
        out["reason"] = f"{DEFAULT_METHOD}: {why} {split} AP ({ap:.3f}) over {images} defect images"
    else:
        tied = "" if ap == best else f" (within {TIE} of the best, {best:.3f}, and simpler)"
        out["reason"] = (
            f"{winner['method']}: {split} AP {ap:.3f}{tied} against {DEFAULT_METHOD}'s "
            f"{base['average_precision']:.3f}, over {images} defect images"
        )
    return out


def store_selection(model_path: str | os.PathLike[str], selection: dict[str, Any]) -> None:
    """Write the chosen method and its table into the model's metadata (weights unchanged)."""
    model, info, _ = load_checkpoint(model_path, "cpu")
    save_checkpoint(model_path, model, replace(info, explain_method=selection["chosen"], method_selection=selection))


def method_after_training(
    model_path: Path, data: str | os.PathLike[str], method: str, device: str, progress: bool
) -> tuple[str, dict[str, Any] | None]:
    """``train --explain-method``: the given spec, or (``auto``, ``auto-all``) the one chosen on the validation
    split with its table; prints one line saying which and why. Nothing is written: training stores the answer in
    the model it writes."""
    if method not in AUTO_CHOICES:
        print(f"explanation: {method} (given)")
        return method, None
    selection = select_method(model_path, data, AuditOptions(device=device, progress=progress), scope=method)
    print(f"explanation: {selection['reason']}")
    return selection["chosen"], selection
