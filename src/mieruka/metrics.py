"""Classification and inspection metrics, as plain functions of labels and probabilities.

Inspection reads a classifier two ways: per class (which defect is it?) and as a gate (does the part pass?). The
gate's two errors have names on the line: an *escape* is an NG part that was passed (a missed defect, the costly
one), an *overkill* is an OK part that was rejected (a false reject).

**The gate** (:func:`gate`, the one rule of ``evaluate``, ``predict``, the service and the report): a part is
rejected when its predicted class is an NG class *or* its NG probability reaches the threshold. So the threshold
can only add rejections to the class verdict: a part the model calls ``fray`` is never passed.

**The threshold** (:func:`choose_threshold`) is chosen on the validation split with a stated guarantee. With n NG
validation parts and k of them passed by the gate at threshold t, split-conformal risk control (Angelopoulos et
al., "Conformal Risk Control", ICLR 2024) bounds the probability that a *new* NG part, exchangeable with them,
escapes: P(escape) ≤ (k + 1) / (n + 1). The chosen t is the highest (fewest false rejects) whose bound meets the
escape target; a target below 1 / (n + 1) cannot be guaranteed with n parts, and then t is the highest that passes
no validation NG part (bound 1 / (n + 1)). :func:`clopper_pearson_upper` gives the one-sided upper confidence
bound of an escape rate observed on a test split, reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "DEFAULT_NG_THRESHOLD",
    "choose_threshold",
    "classification_metrics",
    "clopper_pearson_upper",
    "confusion_matrix",
    "escape_bound",
    "gate",
    "gate_rates",
    "ng_probability",
]


DEFAULT_NG_THRESHOLD = 0.5
"""The NG-probability threshold of a model that has none chosen on validation data (no NG part to calibrate on):
a part is rejected when its NG classes together are at least as likely as its OK classes."""


CONFIDENCE = 0.95
"""Confidence level of the reported Clopper–Pearson upper bounds."""


def gate(probs: np.ndarray, ng_classes: Sequence[int], threshold: float) -> np.ndarray:
    """Which parts are rejected (N,): the predicted class is NG, or P(NG) reaches ``threshold``. ``probs`` is (N, K)."""
    probs = np.asarray(probs)
    if not len(probs):
        return np.zeros(0, dtype=bool)
    return np.isin(probs.argmax(1), list(ng_classes)) | (ng_probability(probs, ng_classes) >= threshold)


def escape_bound(escapes: int, ng_parts: int) -> float | None:
    """The conformal bound (k + 1) / (n + 1) on the escape probability of a new NG part (None without NG parts)."""
    return (escapes + 1) / (ng_parts + 1) if ng_parts else None


def clopper_pearson_upper(failures: int, trials: int, confidence: float = CONFIDENCE) -> float | None:
    """One-sided Clopper–Pearson upper confidence bound of a rate from ``failures`` in ``trials`` (None if none)."""
    if trials <= 0:
        return None
    if failures >= trials:
        return 1.0
    return float(stats.beta.ppf(confidence, failures + 1, trials - failures))


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


def choose_threshold(
    p_ng: np.ndarray, is_ng: np.ndarray, max_escape: float = 0.0, predicted_ng: np.ndarray | None = None
) -> float:
    """The highest NG-probability threshold whose conformal escape bound meets ``max_escape`` (module docstring).

    Args:
        p_ng: (N,) NG probabilities of the validation parts.
        is_ng: (N,) whether each part is NG.
        max_escape: Target for the probability that a new NG part escapes.
        predicted_ng: (N,) whether each part's predicted class is NG (rejected whatever the threshold); default:
            none is (the threshold alone decides).

    Returns:
        The threshold; :data:`DEFAULT_NG_THRESHOLD` with no NG part to calibrate on, 1.0 when the class verdict
        alone already meets the target.
    """
    if not 0.0 <= max_escape <= 1.0:
        raise ValueError(f"--max-escape {max_escape}: must lie between 0 and 1")
    is_ng = np.asarray(is_ng, dtype=bool)
    n = int(is_ng.sum())
    if n == 0:
        return DEFAULT_NG_THRESHOLD
    caught = np.zeros_like(is_ng) if predicted_ng is None else np.asarray(predicted_ng, dtype=bool)
    # NG parts only the threshold can reject, lowest first: a threshold t passes those with p_ng < t
    open_scores = np.sort(np.asarray(p_ng, dtype=np.float64)[is_ng & ~caught])
    allowed = max(0, int(np.floor(max_escape * (n + 1) - 1 + 1e-9)))  # (k + 1) / (n + 1) <= max_escape
    if allowed >= len(open_scores):
        return 1.0
    return float(open_scores[allowed])
