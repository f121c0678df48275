"""Classification and inspection metrics, as plain functions of labels and probabilities.

Inspection reads a classifier two ways: per class (which defect is it?) and as a gate (does the part pass?). The
gate's two errors have names on the line: an *escape* is an NG part that was passed (a missed defect, the costly
one), an *overkill* is an OK part that was rejected (a false reject).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_NG_THRESHOLD",
    "choose_threshold",
    "classification_metrics",
    "confusion_matrix",
    "gate_rates",
    "ng_probability",
]


DEFAULT_NG_THRESHOLD = 0.5
"""The NG-probability threshold of a model that has none chosen on validation data (no NG part to calibrate on):
a part is rejected when its NG classes together are at least as likely as its OK classes."""


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """(K, K) counts; rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, classes: Sequence[str]
) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present), and per-class precision/recall/F1.

    A precision or F1 whose denominator is zero is reported as 0.0 (and the class's ``support`` tells why).
    """
    cm = confusion_matrix(y_true, y_pred, len(classes))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(len(classes)), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(classes)), where=denom > 0)
    present = support > 0
    total = int(support.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    }


def ng_probability(probs: np.ndarray, ng_classes: Sequence[int]) -> np.ndarray:
    """P(NG) per image: the summed probability of the NG classes. ``probs`` is (N, K)."""
    return probs[:, list(ng_classes)].sum(axis=1) if len(ng_classes) else np.zeros(len(probs))


def gate_rates(is_ng: np.ndarray, rejected: np.ndarray) -> dict:
    """Escape rate (NG parts passed, over NG parts) and overkill rate (OK parts rejected, over OK parts).

    A rate with no parts to count is None.
    """
    is_ng = np.asarray(is_ng, dtype=bool)
    rejected = np.asarray(rejected, dtype=bool)
    n_ng, n_ok = int(is_ng.sum()), int((~is_ng).sum())
    escapes, overkills = int((is_ng & ~rejected).sum()), int((~is_ng & rejected).sum())
    return {
        "escape_rate": escapes / n_ng if n_ng else None,
        "overkill_rate": overkills / n_ok if n_ok else None,
        "escapes": escapes,
        "overkills": overkills,
        "ng_parts": n_ng,
        "ok_parts": n_ok,
    }


def choose_threshold(p_ng: np.ndarray, is_ng: np.ndarray, max_escape: float = 0.0) -> float:
    """The highest NG-probability threshold whose escape rate stays at or below ``max_escape``.

    A part is rejected when ``p_ng >= threshold``. Among thresholds meeting the escape target the highest rejects
    the fewest OK parts, i.e. has the lowest overkill. With no NG parts to calibrate on,
    :data:`DEFAULT_NG_THRESHOLD` is returned.
    """
    if not 0.0 <= max_escape <= 1.0:
        raise ValueError(f"--max-escape {max_escape}: must lie between 0 and 1")
    ng_scores = np.sort(np.asarray(p_ng, dtype=np.float64)[np.asarray(is_ng, dtype=bool)])
    if len(ng_scores) == 0:
        return DEFAULT_NG_THRESHOLD
    allowed = int(np.floor(max_escape * len(ng_scores) + 1e-9))  # NG parts that may fall below the threshold
    if allowed >= len(ng_scores):
        return 1.0
    return float(ng_scores[allowed])
