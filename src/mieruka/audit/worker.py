"""The model step of ``mieruka audit`` (:class:`mieruka.batch.engine.Worker`), the same on every engine.

For a chunk of images it reads the images and their defect regions once, then for every method spec explains them in
batches and makes each image's ``audit.csv`` row, its report panel (written into the report folder) and, for the
images chosen for it, the faithfulness figures. It returns one record per image (:class:`AuditRecord`); an image that
cannot be read gives a record with its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mieruka.audit.faithfulness import FaithfulnessConfig, FaithfulnessRun
from mieruka.audit.localization import localization_scores
from mieruka.audit.panels import slug, write_panel
from mieruka.audit.summary import METRICS, chance_baselines
from mieruka.audit.triage import AuditConfig, triage
from mieruka.batch.job import ModelWorker
from mieruka.batch.work import Item
from mieruka.data.annotations import box_source, read_region
from mieruka.data.store import ImageStore
from mieruka.errors import DataError
from mieruka.explain.engine import ExplainedBatch
from mieruka.explain.render import to_original_size
from mieruka.explain.spec import MethodSpec
from mieruka.explain.targets import Target, parse_target
from mieruka.inference import batches, model_input
from mieruka.metrics import gate, ng_probability
from mieruka.results import verdict_word

__all__ = ["AUDIT_COLUMNS", "FAITHFULNESS_METRICS", "AuditJob", "AuditRecord", "AuditWorker"]

FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc", "average_drop", "confidence_increase", "randomization_rho")

AUDIT_COLUMNS = (
    "image",
    "method",
    "layers",
    "true",
    "predicted",
    "probability",
    "true_probability",
    "correct",
    "true_verdict",
    "predicted_verdict",
    "ng_probability",
    "verdict",
    "category",
    *METRICS,
    "area_fraction",
    "brightness",
    *FAITHFULNESS_METRICS,
    "error",
)
"""The columns of ``audit.csv``, one row per image and method; ``error`` is empty unless the image was unreadable.
``brightness`` is the image's mean intensity in [0, 1] as the model sees it (the report's "what to collect next"
notes dark and bright exposures with it)."""


@dataclass
class AuditRecord:
    """What the audit of one image gives the driver.

    Attributes:
        index: The image's position in the audited split.
        error: Why it could not be audited ("" when it was); the other fields are then empty.
        rows: Its ``audit.csv`` row per method spec, in spec order.
        matched: Whether a region source (mask or box entry) was found for it.
        chance: The chance baselines of its region (None without one).
        panels: Per method spec, its report panel (thumbnail, full) relative to the report folder.
        random_order: The faithfulness random-order baseline (deletion, insertion AUC) when it was measured.
    """

    index: int
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    matched: bool = False
    chance: dict[str, dict[str, float]] | None = None
    panels: dict[str, tuple[str, str]] = field(default_factory=dict)
    random_order: tuple[float, float] | None = None


@dataclass(frozen=True)
class AuditJob:
    """What the audit worker does besides explaining: the triage thresholds, where the regions come from (``boxes``:
    box annotations; None: the data set's masks), the report folder for panels (None: no report) and their
    caption, and how many images of the split (``split_size``) get the faithfulness checks (``faithfulness``)."""

    cfg: AuditConfig
    boxes: str | None = None
    report_dir: str | None = None
    caption: str = ""
    faithfulness: int = 0
    faithfulness_config: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    split_size: int = 0


class AuditWorker(ModelWorker):
    """Audits chunks of a split's images (see the module docstring). Picklable: replicas load their own model."""

    per_replica = ("opened", "faith")

    def __init__(
        self, model_path: str, device: str, *, specs: dict[str, MethodSpec], target: str, batch_size: int, job: AuditJob
    ):
        super().__init__(model_path, device)
        self.specs, self.target, self.batch_size, self.job = dict(specs), target, batch_size, job
        self.faith: FaithfulnessRun | None = None

    def after_setup(self) -> None:
        module = self.model.module
        if self.job.faithfulness > 0 and module is not None:
            self.faith = FaithfulnessRun(
                module, self.info, self.job.faithfulness_config, self.job.split_size, self.job.faithfulness,
                self.model.device,
            )  # fmt: skip

    def process(self, items: Sequence[Item]) -> list[AuditRecord]:
        info = self.info
        store, reasons = self.read(items)
        records = [AuditRecord(it.index, reasons.get(it.path, "")) for it in items]
        regions: dict[int, np.ndarray | None] = {}
        for j, it in enumerate(items):
            if not records[j].error:
                try:
                    regions[j] = self._region(it, store.sizes[j], records[j])
                except DataError as exc:  # a broken mask or box file spoils its image, not the audit
                    records[j].error = str(exc)
        good = [j for j in range(len(items)) if not records[j].error]
        targets = parse_target(self.target, info.classes, info.verdicts)
        for name, spec in self.specs.items():
            self._method(name, spec, _Chunk(items, good, store, regions, records), targets)
        return records

    def _region(self, item: Item, size: tuple[int, int], record: AuditRecord) -> np.ndarray | None:
        """The image's defect region (None: none known, or an empty one); sets the record's region fields."""
        if self.job.boxes is None:
            source = Path(item.mask) if item.mask else None
        else:
            source = box_source(Path(self.job.boxes), item.path)
        record.matched = source is not None
        region = read_region(source, item.path, size) if source is not None else None
        if region is None or not region.any():
            return None
        rng = np.random.default_rng([0, item.index])  # the random baseline map: one seeded map per image
        record.chance = chance_baselines(region, self.job.cfg, rng)
        return region

    def _method(self, name: str, spec: MethodSpec, chunk: _Chunk, targets: list[Target] | str) -> None:
        """Every readable image's row (and panel) for one method spec (``name``: as given, ``spec``: resolved)."""
        model, info = self.model, self.info
        items, store, records = chunk.items, chunk.store, chunk.records
        device = model.device
        mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (info.mean, info.std))
        for idx in batches(chunk.good, self.batch_size, desc=f"auditing ({spec.method})", progress=False):
            x = model_input(store, idx, device, info.mean, info.std)
            labels = torch.tensor([items[j].label for j in idx], device=device)
            ex = model.explain(x, spec, targets, labels)
            measured: dict[int, dict[str, Any]] = {}
            if self.faith is not None:
                keys = [items[j].index for j in idx]
                measured = self.faith.measure(store, idx, keys, x, ex, spec.method, spec.layers, spec.fusion)
            brightness = (x.float() * std + mean).mean((1, 2, 3)).clamp(0, 1).tolist()
            for n, j in enumerate(idx):
                extra = measured.get(items[j].index, {})
                if "random_order" in extra:
                    records[j].random_order = extra["random_order"]
                heat = to_original_size(ex.maps[n, 0].float().cpu(), store.sizes[j]).numpy()
                row = self._row(name, items[j], _Seen(heat, chunk.regions[j], ex, n), extra, records[j])
                row["brightness"] = brightness[n]
                records[j].rows.append(row)

    def _row(self, spec: str, item: Item, seen: _Seen, measured: dict[str, Any], record: AuditRecord) -> dict[str, Any]:
        """The audit row of one image (position ``n`` of the batch ``ex`` explains)."""
        info, heat, region, ex, n = self.info, seen.heat, seen.region, seen.ex, seen.n
        probs = ex.probs[n].float().cpu()
        pred, true = int(probs.argmax()), item.label
        true_name = info.classes[true]
        as_batch = probs[None].numpy()
        rejected = bool(gate(as_batch, info.ng_classes, info.decision_threshold)[0])
        scores = None
        if region is not None:
            cfg = self.job.cfg
            scores = localization_scores(heat, region, tolerance=cfg.tolerance, threshold=cfg.map_threshold)
        if self.job.report_dir is not None:
            caption = self.job.caption.format(t=true_name, p=info.classes[pred], q=f"{float(probs[pred]):.2f}")
            stem = f"{slug(spec)}/{item.index:05d}"
            record.panels[spec] = write_panel(
                Path(self.job.report_dir), stem, item.path, heat, caption, info.bit_depth, region
            )
        row: dict[str, Any] = {
            "image": item.image,
            "method": spec,
            "layers": ",".join(ex.layers),
            "true": true_name,
            "predicted": info.classes[pred],
            "probability": float(probs[pred]),
            "true_probability": float(probs[true]),
            "correct": pred == true,
            "true_verdict": info.verdicts[true_name],
            "predicted_verdict": info.verdicts[info.classes[pred]],
            "ng_probability": float(ng_probability(as_batch, info.ng_classes)[0]),
            "verdict": verdict_word(rejected),
            "category": triage(pred == true, scores, self.job.cfg, ok_class=info.verdicts[true_name] == "OK"),
        }
        for k in METRICS:
            row[k] = None if scores is None else getattr(scores, k)
        row["area_fraction"] = None if scores is None else scores.area_fraction
        for k in FAITHFULNESS_METRICS:
            row[k] = measured.get(k)
        row["error"] = ""
        return row


@dataclass(frozen=True)
class _Chunk:
    """A chunk being audited: its items, the readable ones' positions, their pixels, regions and records."""

    items: Sequence[Item]
    good: list[int]
    store: ImageStore
    regions: dict[int, np.ndarray | None]
    records: list[AuditRecord]


@dataclass(frozen=True)
class _Seen:
    """One image's map at its own size, its region, and its place ``n`` in the batch ``ex``."""

    heat: np.ndarray
    region: np.ndarray | None
    ex: ExplainedBatch
    n: int
