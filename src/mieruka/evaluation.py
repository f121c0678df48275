"""The evaluation's figures, typed: what ``mieruka evaluate`` writes to ``metrics.json`` (same keys) and what the
CLI, the Python API and MLflow read (fields, not string keys).

``schema_version`` says which keys a file has; :meth:`EvaluationMetrics.read` refuses a file from a newer version.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from mieruka._io import check_schema, read_json_as

__all__ = [
    "SCHEMA_VERSION",
    "ClassFigures",
    "EvaluationMetrics",
    "GateFigures",
    "NeighborFigures",
    "Unreadable",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClassFigures:
    """One class's precision, recall and F1 (0.0 when the denominator is zero; ``support`` says why)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class GateFigures:
    """The OK/NG view of one way to reject parts (:func:`mieruka.metrics.gate_rates`).

    Attributes:
        escape_rate: NG parts passed, over NG parts (None: no NG part).
        overkill_rate: OK parts rejected, over OK parts (None: no OK part).
        escape_upper_bound: The escape rate's one-sided Clopper–Pearson upper bound at ``confidence``.
    """

    escape_rate: float | None
    overkill_rate: float | None
    escapes: int
    overkills: int
    ng_parts: int
    ok_parts: int
    escape_upper_bound: float | None


@dataclass(frozen=True)
class Unreadable:
    """An image left out of the figures, and why."""

    image: str
    reason: str


@dataclass(frozen=True)
class NeighborFigures:
    """``--neighbors``: the misclassified images whose nearest training image carries the predicted label."""

    k: int
    reference_split: str
    errors: int
    errors_nearest_labelled_as_predicted: int
    images: list[str]


@dataclass(frozen=True)
class EvaluationMetrics:
    """One split's evaluation (``metrics.json``).

    Attributes:
        model, data, split: What was evaluated.
        classes, verdicts: The model's classes and their OK/NG verdicts.
        images: Images in the figures (readable ones); ``unreadable``: the others.
        tta: The test-time augmentation used.
        accuracy, balanced_accuracy, per_class, confusion_matrix: The classification (rows: true class).
        escape_rate, overkill_rate: By the predicted class's verdict alone (``gate_by_class``'s).
        gate_by_class: The OK/NG view by the predicted class's verdict.
        threshold: The NG-probability threshold, chosen on ``threshold_chosen_on`` for escape ≤ ``max_escape``.
        escape_bound: The threshold's conformal bound on the escape probability of a new defect.
        confidence: Level of the upper bounds.
        gate_at_threshold: The OK/NG view of the gate at ``threshold`` (as ``predict`` and ``serve`` decide).
        neighbors: ``--neighbors`` figures (None: not asked).
    """

    schema_version: int
    mieruka_version: str
    model: str
    data: str
    split: str
    classes: list[str]
    verdicts: dict[str, str]
    images: int
    unreadable: list[Unreadable]
    tta: str
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]
    escape_rate: float | None
    overkill_rate: float | None
    gate_by_class: GateFigures
    threshold: float
    threshold_chosen_on: str
    max_escape: float
    escape_bound: float | None
    confidence: float
    gate_at_threshold: GateFigures
    neighbors: NeighborFigures | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.neighbors is None:
            del out["neighbors"]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvaluationMetrics:
        check_schema(d, "metrics.json", SCHEMA_VERSION)
        parts = {
            "unreadable": [Unreadable(**u) for u in d["unreadable"]],
            "per_class": {c: ClassFigures(**f) for c, f in d["per_class"].items()},
            "gate_by_class": GateFigures(**d["gate_by_class"]),
            "gate_at_threshold": GateFigures(**d["gate_at_threshold"]),
            "neighbors": None if d.get("neighbors") is None else NeighborFigures(**d["neighbors"]),
        }
        return cls(**{**d, **parts})

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> EvaluationMetrics:
        """An evaluation's ``metrics.json``."""
        return read_json_as(path, cls.from_json, "an evaluation's metrics.json")
