"""The audit's summary: mean localization and faithfulness figures per method and class, beside chance baselines.

Chance baselines answer "what would a map that knows nothing score on these regions?": ``uniform`` (a flat map, in
expectation), ``random`` (one seeded noise map) and ``center`` (a bump at the image center, the guess of a model that
always looks at the middle).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from mieruka.audit.localization import localization_scores
from mieruka.audit.triage import CATEGORIES, AuditConfig

__all__ = ["BASELINES", "BASELINE_METRICS", "METRICS", "chance_baselines", "summarize"]

METRICS = (
    "energy_inside",
    "lift",
    "pointing_hit",
    "relevance_rank",
    "average_precision",
    "iou",
    "dice",
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


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _faithfulness(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    measured = [r for r in rows if r.get("deletion_auc") is not None]
    if not measured:
        return None
    return {
        "images": len(measured),
        "deletion_auc": _mean([float(r["deletion_auc"]) for r in measured]),
        "insertion_auc": _mean([float(r["insertion_auc"]) for r in measured]),
        "average_drop_percent": 100 * float(np.mean([float(r["average_drop"]) for r in measured])),
        "increase_rate": _mean([float(bool(r["confidence_increase"])) for r in measured]),
        "randomization_rho": _mean([float(r["randomization_rho"]) for r in measured]),
    }


def _group(rows: Sequence[dict[str, Any]], baselines: dict[str, dict[str, dict[str, float]] | None]) -> dict[str, Any]:
    """The summary entry of one group of rows (one method; all images or one class)."""
    with_region = [r for r in rows if r["energy_inside"] is not None]
    entry: dict[str, Any] = {"images": len(rows), "with_region": len(with_region)}
    for k in METRICS:
        entry[k] = _mean([float(r[k]) for r in with_region])
    chance = [b for b in (baselines[r["image"]] for r in with_region) if b is not None]
    entry["baselines"] = {
        name: {k: _mean([b[name][k] for b in chance]) for k in BASELINE_METRICS} for name in BASELINES
    }
    faithfulness = _faithfulness(rows)
    if faithfulness is not None:
        entry["faithfulness"] = faithfulness
    entry["categories"] = dict(Counter(r["category"] for r in rows))
    return entry


def summarize(
    rows: Sequence[dict[str, Any]],
    baselines: dict[str, dict[str, dict[str, float]] | None],
    methods: Sequence[str],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Per method, for ``all`` images and for each true class: means, chance baselines and category counts.

    Args:
        rows: ``audit.csv`` rows (dicts).
        baselines: Image path → :func:`chance_baselines` of its region (None without a region).
        methods: Method specs, in report order.
        classes: Class names, in the model's order.
    """
    out: dict[str, Any] = {"methods": {}}
    for method in methods:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r["method"] == method:
                groups["all"].append(r)
                groups[r["true"]].append(r)
        out["methods"][method] = {name: _group(groups.get(name, []), baselines) for name in ["all", *classes]}
    out["categories"] = list(CATEGORIES)
    return out
