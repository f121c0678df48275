from __future__ import annotations

import numpy as np
import pytest

from mieruka.metrics import choose_threshold, classification_metrics, confusion_matrix, gate_rates, ng_probability


def test_hand_computed_classification_metrics() -> None:
    # true: a a a b b c ; pred: a a b b c c
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_absent_class_is_left_out_of_balanced_accuracy() -> None:
    m = classification_metrics([0, 0], [0, 1], ["a", "b"])
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert confusion_matrix([1], [0], 2).tolist() == [[0, 0], [1, 0]]


def test_gate_rates() -> None:
    is_ng = np.array([1, 1, 1, 1, 0, 0], bool)
    rejected = np.array([1, 1, 1, 0, 1, 0], bool)
    g = gate_rates(is_ng, rejected)
    assert g["escape_rate"] == pytest.approx(0.25) and g["overkill_rate"] == pytest.approx(0.5)
    assert gate_rates(np.array([0], bool), np.array([0], bool))["escape_rate"] is None


def test_ng_probability_sums_ng_classes() -> None:
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    np.testing.assert_allclose(ng_probability(probs, [0, 2]), [0.7, 0.9])


def test_threshold_meets_escape_target_with_least_overkill() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.35])
    ng = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    t0 = choose_threshold(p, ng, 0.0)
    assert t0 == pytest.approx(0.3)  # lowest NG score: every NG part rejected
    assert gate_rates(ng, p >= t0)["escape_rate"] == 0.0
    assert gate_rates(ng, p >= t0)["overkill_rate"] == pytest.approx(1 / 3)  # only 0.35 is rejected
    t25 = choose_threshold(p, ng, 0.25)  # one of four NG may escape
    assert t25 == pytest.approx(0.6)
    assert gate_rates(ng, p >= t25)["escape_rate"] == pytest.approx(0.25)
    assert choose_threshold(p, np.zeros(7, bool)) == 0.5
    with pytest.raises(ValueError, match="--max-escape"):
        choose_threshold(p, ng, 1.5)
