"""The audit's summary: mean localization and faithfulness figures per method and class, beside chance baselines.

Chance baselines answer "what would a map that knows nothing score on these regions?": ``uniform`` (a flat map, in
expectation), ``random`` (one seeded noise map) and ``center`` (a bump at the image center, the guess of a model that
always looks at the middle).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from mieruka.audit.localization import localization_scores
from mieruka.audit.triage import CATEGORIES, MARKED_OK, AuditConfig

ALL = "all"

__all__ = ["ALL", "BASELINES", "BASELINE_METRICS", "METRICS", "SummaryBuilder", "chance_baselines"]

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

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.images, "with_region": self.with_region}
        for k in METRICS:
            out[k] = _mean(self.sums[k], self.with_region)
        out["baselines"] = {
            name: {k: _mean(self.chance_sums[name][k], self.chance) for k in BASELINE_METRICS} for name in BASELINES
        }
        if self.measured:
            n, f = self.measured, self.faith
            out["faithfulness"] = {
                "images": n,
                "deletion_auc": f["deletion_auc"] / n,
                "insertion_auc": f["insertion_auc"] / n,
                "average_drop_percent": 100 * f["average_drop"] / n,
                "increase_rate": f["increase"] / n,
                "randomization_rho": f["rho"] / n,
            }
        out["categories"] = dict(self.categories)
        return out


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
        """Per method: ``all`` images (whose localization figures are those of the defect images: NG classes with a
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
