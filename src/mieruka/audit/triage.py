"""Triage: one category per audited image, and the ranked list of images worth a human look.

An image whose region is known is *on target* when the map's maximum lies within ``tolerance`` pixels of the region
(the pointing game); its attention is *fragmented* when at least ``min_fragments`` components exceed
``map_threshold`` × max and the largest holds under ``max_largest_share`` of their mass. Categories:
``correct_on_target``, ``correct_off_target`` ("right for the wrong reason"), ``wrong_off_target``,
``wrong_fragmented``, ``wrong_on_target`` (class confusion), ``marked_ok`` (an image of an OK class whose mark —
a scratch, dirt — has a region: its localization is scored apart, not among the defects) and ``no_region`` (no mask,
or an OK part without a mark). These are the paper's observations made measurable: correct predictions looked at
the defect, wrong ones looked elsewhere or had their attention broken into pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mieruka.audit.localization import DEFAULT_MAP_THRESHOLD, POINTING_TOLERANCE, LocalizationScores

__all__ = ["CATEGORIES", "MARKED_OK", "REVIEW_HEADER", "AuditConfig", "review_list", "triage"]

CATEGORIES = (
    "correct_on_target",
    "correct_off_target",
    "wrong_off_target",
    "wrong_fragmented",
    "wrong_on_target",
    "marked_ok",
    "no_region",
)

MARKED_OK = "marked_ok"
"""The category of an image of an OK class whose mark (a scratch or dirt that passes) has a region: scored apart,
not as a defect."""

REVIEW_HEADER = ("rank", "image", "method", "true", "predicted", "probability", "category", "priority", "reasons")
"""The columns of ``review.csv``."""


@dataclass(frozen=True)
class AuditConfig:
    """Thresholds of the audit (documented in the module docstring).

    Attributes:
        tolerance: Pointing-game tolerance in pixels.
        map_threshold: Fraction of a map's maximum above which a pixel counts as attended (IoU, Dice, fragments).
        min_fragments: Components from which attention counts as fragmented.
        max_largest_share: ... when the largest component holds less than this share of the attended mass.
        low_confidence: Predictions below this probability are worth a look.
        label_error_confidence: Confident errors at or above this probability suggest a wrong label.
    """

    tolerance: int = POINTING_TOLERANCE
    map_threshold: float = DEFAULT_MAP_THRESHOLD
    min_fragments: int = 3
    max_largest_share: float = 0.5
    low_confidence: float = 0.6
    label_error_confidence: float = 0.9


def triage(correct: bool, scores: LocalizationScores | None, cfg: AuditConfig, ok_class: bool = False) -> str:
    """The category of one image (see the module docstring); ``ok_class``: its true class passes."""
    if scores is None:
        return "no_region"
    if ok_class:
        return MARKED_OK
    on = scores.pointing_hit
    fragmented = scores.components >= cfg.min_fragments and scores.largest_component_share < cfg.max_largest_share
    if correct:
        return "correct_on_target" if on else "correct_off_target"
    if on:
        return "wrong_on_target"
    return "wrong_fragmented" if fragmented else "wrong_off_target"


def _priority(r: dict[str, Any], cfg: AuditConfig) -> tuple[float, list[str]]:
    """How much a human look at one audit row is worth, and why."""
    reasons = []
    priority = 0.0
    if not r["correct"]:
        priority += 3
        reasons.append(f"misclassified as {r['predicted']}")
        if r["probability"] >= cfg.label_error_confidence:
            priority += 1
            reasons.append(f"confident ({r['probability']:.2f}): check the label")
        if r["true_verdict"] == "NG" and r.get("verdict", r["predicted_verdict"]) == "OK":
            priority += 2
            reasons.append("escape: a defect would pass")
    category = r["category"]
    if category == "correct_off_target":
        priority += 2
        reasons.append("right for the wrong reason: attention off the defect")
    elif category == "wrong_fragmented":
        priority += 1
        reasons.append("attention broken into pieces")
    elif category == "wrong_off_target":
        reasons.append("attention off the defect")
    elif category == "wrong_on_target":
        reasons.append("looked at the defect but confused the class: collect more of both classes")
    if r.get("deletion_auc") is not None and r["insertion_auc"] <= r["deletion_auc"]:
        priority += 0.5
        reasons.append(
            "heatmap not faithful: putting its red pixels back helps the score no more than removing them hurts"
        )
    if r["probability"] < cfg.low_confidence:
        priority += 1 - r["probability"]
        reasons.append(f"low confidence ({r['probability']:.2f})")
    return priority, reasons


def review_list(rows: Sequence[dict[str, Any]], cfg: AuditConfig) -> list[tuple[Any, ...]]:
    """Audit rows worth a look, highest priority first, as ``review.csv`` rows (:data:`REVIEW_HEADER`)."""
    ranked = []
    for r in rows:
        priority, reasons = _priority(r, cfg)
        if priority > 0:
            ranked.append((priority, r, reasons))
    ranked.sort(key=lambda t: -t[0])
    return [
        (
            n + 1,
            r["image"],
            r["method"],
            r["true"],
            r["predicted"],
            f"{r['probability']:.4f}",
            r["category"],
            f"{p:.3f}",
            "; ".join(reasons),
        )
        for n, (p, r, reasons) in enumerate(ranked)
    ]
