from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mieruka.metrics import (
    choose_threshold,
    classification_metrics,
    clopper_pearson_upper,
    confusion_matrix,
    escape_bound,
    gate,
    gate_rates,
    ng_probability,
)


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
    # one escape of n = 4 has the conformal bound (1 + 1) / (4 + 1) = 0.4: a target of 0.4 allows it, 0.39 does not
    assert choose_threshold(p, ng, 0.4) == pytest.approx(0.6)
    assert choose_threshold(p, ng, 0.39) == pytest.approx(0.3)
    assert escape_bound(1, 4) == pytest.approx(0.4) and escape_bound(0, 0) is None
    assert choose_threshold(p, np.zeros(7, bool)) == 0.5
    with pytest.raises(ValueError, match="--max-escape"):
        choose_threshold(p, ng, 1.5)


def test_gate_never_passes_a_part_whose_class_is_ng() -> None:
    # classes: 0 = good (OK), 1 = crack (NG); part 1 is called crack at P(NG) 0.55, below a threshold of 0.8
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.15, 0.85]])
    assert gate(probs, [1], 0.8).tolist() == [False, True, True]
    assert gate(probs, [1], 0.05).tolist() == [True, True, True]
    assert gate(np.zeros((0, 2)), [1], 0.5).tolist() == []
    # the threshold is chosen among the NG parts the class verdict passes: here only the one at 0.4
    p_ng = np.array([0.55, 0.4, 0.9, 0.1])
    is_ng = np.array([1, 1, 1, 0], bool)
    predicted_ng = np.array([1, 0, 1, 0], bool)
    assert choose_threshold(p_ng, is_ng, 0.0, predicted_ng) == pytest.approx(0.4)
    assert choose_threshold(p_ng, is_ng, 0.0, np.ones(4, bool)) == 1.0  # the class verdict catches them all


def test_clopper_pearson_upper_bound() -> None:
    # no failure in n trials: the bound solves (1 - u)^n = 1 - confidence
    assert clopper_pearson_upper(0, 77) == pytest.approx(1 - 0.05 ** (1 / 77))
    upper = clopper_pearson_upper(3, 79)  # the rate at which 3 or fewer failures in 79 have probability 5 %
    assert upper is not None and stats.binom.cdf(3, 79, upper) == pytest.approx(0.05, abs=1e-9)
    assert clopper_pearson_upper(5, 5) == 1.0 and clopper_pearson_upper(0, 0) is None


def test_conformal_threshold_keeps_its_escape_guarantee() -> None:
    """Calibrate on n exchangeable NG parts for a target escape rate, then measure on fresh parts of the same
    distribution: averaged over many calibrations the escape rate stays at or below the target, and the last NG
    part needed to keep that guarantee is not thrown away (the rate is close to the target, not far below)."""
    rng = np.random.default_rng(0)
    target, n, trials = 0.1, 49, 4000
    rates = []
    for _ in range(trials):
        val = rng.beta(5, 2, n)  # NG probabilities of validation defects
        t = choose_threshold(val, np.ones(n, bool), target)
        rates.append(float((rng.beta(5, 2, 2000) < t).mean()))
    mean = float(np.mean(rates))
    assert mean <= target + 0.003
    assert mean >= target - 0.03
