"""The audit's summary: mean localization and faithfulness figures per method and class, beside chance baselines.

Chance baselines answer "what would a map that knows nothing score on these regions?": ``uniform`` (a flat map, in
expectation), ``random`` (one seeded noise map) and ``center`` (a bump at the image center, the guess of a model that
always looks at the middle).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from mieruka._io import check_schema, read_json_as
from mieruka.audit.faithfulness import FaithfulnessCheck
from mieruka.audit.localization import localization_scores
from mieruka.audit.triage import CATEGORIES, MARKED_OK, AuditConfig

ALL = "all"
SCHEMA_VERSION = 2
"""Of ``summary.json``; a file written with a higher version is refused by :meth:`AuditSummary.read`."""

__all__ = [
    "ALL",
    "BASELINES",
    "BASELINE_METRICS",
    "METRICS",
    "SCHEMA_VERSION",
    "AuditSummary",
    "Errors",
    "FaithfulnessMeans",
    "GroupFigures",
    "Regions",
    "SummaryBuilder",
    "chance_baselines",
]

METRICS = (
    "energy_inside",
    "lift",
    "pointing_hit",
    "relevance_rank",
    "average_precision",
    "iou",
    "dice",
    "attended_fraction",
    "iou_at_area",
    "dice_at_area",
    "components",
    "largest_component_share",
)
"""The per-image localization metrics of ``audit.csv`` (:class:`~mieruka.audit.localization.LocalizationScores`)."""

BASELINE_METRICS = ("energy_inside", "pointing_hit", "relevance_rank", "average_precision")
BASELINES = ("uniform", "random", "center")


def chance_baselines(mask: np.ndarray, cfg: AuditConfig, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """What maps that know nothing score on this mask.

    ``uniform``: a flat map, in expectation (energy, rank accuracy and AP equal the area fraction; its pointing
    score is the chance that a random pixel lies within the tolerance of the region). ``random``: one seeded noise
    map. ``center``: a bump at the image center.
    """
    h, w = mask.shape
    area = float(mask.mean())
    near = float((ndimage.distance_transform_edt(~mask) <= cfg.tolerance).mean())
    yy, xx = np.mgrid[0:h, 0:w]
    center = 1.0 - np.hypot((yy - (h - 1) / 2) / h, (xx - (w - 1) / 2) / w) / np.sqrt(0.5)
    out = {"uniform": {"energy_inside": area, "pointing_hit": near, "relevance_rank": area, "average_precision": area}}
    for name, heat in (("random", rng.random((h, w))), ("center", center)):
        scores = localization_scores(heat, mask, tolerance=cfg.tolerance, threshold=cfg.map_threshold)
        out[name] = {k: float(getattr(scores, k)) for k in BASELINE_METRICS}
    return out


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _without_none(d: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``d`` less those of ``keys`` whose value is None (optional parts the JSON leaves out)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


@dataclass(frozen=True)
class FaithfulnessMeans:
    """A group's mean faithfulness figures (the images measured by ``--faithfulness``)."""

    images: int
    deletion_auc: float
    insertion_auc: float
    average_drop_percent: float
    increase_rate: float
    randomization_rho: float


@dataclass(frozen=True)
class GroupFigures:
    """The audit's figures for one method and one group of images (``all``, ``marked_ok`` or a true class).

    The localization means are over the group's images with a region (``with_region``; None when none has one):
    the names and meanings of :class:`~mieruka.audit.localization.LocalizationScores`.
    """

    images: int
    with_region: int
    energy_inside: float | None = None
    lift: float | None = None
    pointing_hit: float | None = None
    relevance_rank: float | None = None
    average_precision: float | None = None
    iou: float | None = None
    dice: float | None = None
    attended_fraction: float | None = None
    iou_at_area: float | None = None
    dice_at_area: float | None = None
    components: float | None = None
    largest_component_share: float | None = None
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Chance baselines (``uniform``, ``random``, ``center``) of :data:`BASELINE_METRICS` on the same regions."""
    faithfulness: FaithfulnessMeans | None = None
    categories: dict[str, int] = field(default_factory=dict)
    """Images per triage category."""

    def to_json(self) -> dict[str, Any]:
        return _without_none(asdict(self), ("faithfulness",))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupFigures:
        known = {f.name for f in fields(cls)}
        faith = d.get("faithfulness")
        return cls(
            **{k: v for k, v in d.items() if k in known and k != "faithfulness"},
            faithfulness=None if faith is None else FaithfulnessMeans(**faith),
        )


@dataclass(frozen=True)
class Regions:
    """Where the regions came from and how many images had one."""

    source: str
    images: int
    matched: int
    with_region: int
    ng_without_region: int


@dataclass(frozen=True)
class Errors:
    """Images that could not be audited: how many, and the first's reason."""

    images: int
    first: str | None


@dataclass(frozen=True)
class AuditSummary:
    """The audit's summary (``summary.json``, same keys), read by the CLI, the report and the Python API.

    Attributes:
        methods: Per method spec, per group (``all``, ``marked_ok``, each class): its figures.
        categories: The triage categories, in report order.
        marked_ok_images: Images of OK classes with a marked region (scored apart as ``marked_ok``).
        marked_ok_note: Why they are apart ("" when there are none).
        faithfulness: The faithfulness checks (None: not run).
        regions: Where the regions came from.
        errors: Images that could not be audited.
        chosen_method: The model's explanation method, or what ``--method auto`` chose.
        method_selection: How it was chosen (candidates with their validation figures), if it was.
        ng_threshold: The model's calibrated NG threshold.
        model, data, split, target, config: What was audited, and how.
    """

    methods: dict[str, dict[str, GroupFigures]]
    categories: list[str]
    marked_ok_images: int
    marked_ok_note: str
    faithfulness: FaithfulnessCheck | None
    regions: Regions
    errors: Errors
    chosen_method: str
    method_selection: dict[str, Any] | None
    ng_threshold: float | None
    schema_version: int
    mieruka_version: str
    model: str
    data: str
    split: str
    target: str
    config: AuditConfig

    def figures(self, method: str, group: str = ALL) -> GroupFigures:
        """One method's figures for one group (default: all images; localization: the defect images)."""
        return self.methods[method][group]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = {m: {g: f.to_json() for g, f in gs.items()} for m, gs in self.methods.items()}
        return _without_none(out, ("faithfulness",))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AuditSummary:
        version = check_schema(d, "summary.json", SCHEMA_VERSION)
        faith = d.get("faithfulness")
        return cls(
            methods={m: {g: GroupFigures.from_json(f) for g, f in gs.items()} for m, gs in d["methods"].items()},
            categories=list(d["categories"]),
            marked_ok_images=int(d.get("marked_ok_images", 0)),
            marked_ok_note=str(d.get("marked_ok_note", "")),
            faithfulness=None if faith is None else FaithfulnessCheck.from_json(faith),
            regions=Regions(**d["regions"]),
            errors=Errors(**d["errors"]),
            chosen_method=d["chosen_method"],
            method_selection=d.get("method_selection"),
            ng_threshold=d.get("ng_threshold"),
            schema_version=version,
            mieruka_version=d.get("mieruka_version", ""),
            model=d["model"],
            data=d["data"],
            split=d["split"],
            target=d.get("target", "predicted"),
            config=AuditConfig(**d.get("config", {})),
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> AuditSummary:
        """An audit's ``summary.json``."""
        return read_json_as(path, cls.from_json, "an audit summary")


class _Group:
    """Running sums of one group of rows (one method; all images or one class)."""

    def __init__(self) -> None:
        self.images = 0
        self.with_region = 0
        self.sums = dict.fromkeys(METRICS, 0.0)
        self.chance = 0
        self.chance_sums = {name: dict.fromkeys(BASELINE_METRICS, 0.0) for name in BASELINES}
        self.measured = 0
        self.faith = dict.fromkeys(("deletion_auc", "insertion_auc", "average_drop", "increase", "rho"), 0.0)
        self.categories: Counter[str] = Counter()

    def add(self, r: dict[str, Any], chance: dict[str, dict[str, float]] | None, localize: bool = True) -> None:
        self.images += 1
        self.categories[r["category"]] += 1
        if r.get("deletion_auc") is not None:
            self.measured += 1
            for key in ("deletion_auc", "insertion_auc", "average_drop"):
                self.faith[key] += float(r[key])
            self.faith["increase"] += float(bool(r["confidence_increase"]))
            self.faith["rho"] += float(r["randomization_rho"])
        if r["energy_inside"] is None or not localize:
            return
        self.with_region += 1
        for k in METRICS:
            self.sums[k] += float(r[k])
        if chance is not None:
            self.chance += 1
            for name in BASELINES:
                for k in BASELINE_METRICS:
                    self.chance_sums[name][k] += chance[name][k]

    def entry(self) -> GroupFigures:
        faithfulness = None
        if self.measured:
            n, f = self.measured, self.faith
            faithfulness = FaithfulnessMeans(
                images=n,
                deletion_auc=f["deletion_auc"] / n,
                insertion_auc=f["insertion_auc"] / n,
                average_drop_percent=100 * f["average_drop"] / n,
                increase_rate=f["increase"] / n,
                randomization_rho=f["rho"] / n,
            )
        return GroupFigures(
            images=self.images,
            with_region=self.with_region,
            **{k: _mean(self.sums[k], self.with_region) for k in METRICS},
            baselines={
                name: {k: _mean(self.chance_sums[name][k], self.chance) for k in BASELINE_METRICS} for name in BASELINES
            },
            faithfulness=faithfulness,
            categories=dict(self.categories),
        )


class SummaryBuilder:
    """The audit summary accumulated row by row (memory does not grow with the number of images).

    Args:
        methods: Method specs, in report order.
        classes: Class names, in the model's order.
    """

    def __init__(self, methods: Sequence[str], classes: Sequence[str]):
        self.methods, self.classes = list(methods), list(classes)
        self.groups = {m: {name: _Group() for name in [ALL, MARKED_OK, *classes]} for m in methods}

    def add(self, row: dict[str, Any], chance: dict[str, dict[str, float]] | None) -> None:
        """One ``audit.csv`` row (a dict) and the :func:`chance_baselines` of its image's region (None: none)."""
        groups = self.groups[row["method"]]
        marked_ok = row["category"] == MARKED_OK
        groups[ALL].add(row, chance, localize=not marked_ok)  # localization of "all": defect images only
        if marked_ok:
            groups[MARKED_OK].add(row, chance)
        groups[row["true"]].add(row, chance)

    def result(self) -> dict[str, Any]:
        """:class:`AuditSummary`'s ``methods``, ``categories``, ``marked_ok_images`` and ``marked_ok_note``.

        Per method: ``all`` images (whose localization figures are those of the defect images: NG classes with a
        region), ``marked OK`` images (OK classes whose marks have regions, scored apart) and each true class:
        means, chance baselines and category counts."""
        methods = {m: {name: g.entry() for name, g in groups.items()} for m, groups in self.groups.items()}
        marked = self.groups[self.methods[0]][MARKED_OK].images if self.methods else 0
        note = (
            f"{marked} image(s) of OK classes carry a marked region (e.g. a scratch that passes): they are scored "
            f"apart as '{MARKED_OK}', not among the defect images of 'all'"
            if marked
            else ""
        )
        return {"methods": methods, "categories": list(CATEGORIES), "marked_ok_images": marked, "marked_ok_note": note}
