"""Drift: the record's recent decisions compared with a reference (``mieruka monitor``).

The reference is the one the model's training stored (its validation split as the service records it:
``drift_reference`` in the model's summary, :mod:`mieruka.record.reference`) when there is one, else the first
``reference`` decisions the model made in the record (the line's own start, said in the report). The window is
the model's newest ``window`` decisions (or those since a time), after the reference ones.

Per feature of :data:`~mieruka.record.features.FEATURES` (confidence, brightness, contrast, sharpness, heatmap
peak position and spread): the population stability index over the reference's deciles, and the two-sample
Kolmogorov–Smirnov test. The class mix: its PSI and a chi-square test. The NG rate: a p-chart, the window's rate
against the reference's with 3-sigma binomial limits for the window's size.

An alert is raised for a feature whose PSI is at least :data:`PSI_ALERT` (0.25, the usual "significant shift")
*and* whose test rejects "same distribution" at :data:`P_ALERT` (0.001): the PSI says the shift matters, the test
that it is not the noise of a small window. For the NG rate: outside the 3-sigma limits (a false-alarm rate of
about 0.3 % per check on a stable line).
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import Engine, select

from mieruka.errors import MierukaError
from mieruka.record.features import FEATURES, reference_from_rows, values_of
from mieruka.record.query import Selection, iter_rows
from mieruka.record.schema import decisions, models

__all__ = [
    "PSI_ALERT",
    "P_ALERT",
    "DriftReport",
    "model_reference",
    "monitor",
    "psi",
    "reference_from_rows",
    "send_webhook",
]

PSI_ALERT = 0.25
P_ALERT = 1e-3
BINS = 10
CHART_GROUPS = 10
"""The p-chart's points: the window cut into this many consecutive subgroups."""
_EPS = 1e-4


def binned(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's inner quantile edges (at most ``bins`` - 1), and the share of each sample in every bin they
    make (below the first edge, between edges, from the last edge up)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    return edges, r, c


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference``, over the reference's quantile bins."""
    _, r, c = binned(reference, current, bins)
    return _psi_of_shares(r, c)


def _psi_of_shares(r: np.ndarray, c: np.ndarray) -> float:
    r, c = np.clip(r, _EPS, None), np.clip(c, _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _categorical_psi(reference: dict[str, float], current: dict[str, float]) -> float:
    keys = set(reference) | set(current)
    r = np.clip([reference.get(k, 0.0) for k in keys], _EPS, None)
    c = np.clip([current.get(k, 0.0) for k in keys], _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


@dataclass
class DriftReport:
    """What ``monitor`` found (its JSON: :meth:`as_json`)."""

    model_id: str
    reference: dict[str, Any]
    window: dict[str, Any]
    psi: dict[str, float | None] = field(default_factory=dict)
    p_values: dict[str, float | None] = field(default_factory=dict)
    classes: dict[str, Any] = field(default_factory=dict)
    ng_rate: dict[str, Any] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Per feature: the reference's quantile ``edges`` and the ``reference`` / ``window`` share in each bin (the
    bins the PSI sums over), for plots."""

    def as_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "reference": self.reference,
            "window": self.window,
            "psi": self.psi,
            "p_values": self.p_values,
            "classes": self.classes,
            "ng_rate": self.ng_rate,
            "alerts": self.alerts,
            "histograms": self.histograms,
            "thresholds": {"psi": PSI_ALERT, "p_value": P_ALERT, "ng_rate": "3-sigma p-chart"},
        }


def _rows(engine: Engine, selection: Selection) -> list[dict[str, Any]]:
    names = [c.name for c in decisions.columns]
    return [dict(zip(names, r, strict=True)) for page in iter_rows(engine, selection) for r in page]


def _select(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _newest_model(engine: Engine) -> str:
    with engine.connect() as conn:
        row = conn.execute(select(decisions.c.model_id).order_by(decisions.c.id.desc()).limit(1)).first()
    if row is None:
        raise MierukaError("the record holds no decisions yet")
    return str(row[0])


def _stored_reference(engine: Engine, model_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(models.c.reference).where(models.c.model_id == model_id)).first()
    return None if row is None or row[0] is None else json.loads(row[0])


def model_reference(engine: Engine, model_id: str, reference: int = 500) -> tuple[dict[str, Any], str, int]:
    """The reference of a model's decisions (module docstring): its distributions, where they come from, and the id
    of the last decision it holds (0 for training's, which holds none of the record's)."""
    stored = _stored_reference(engine, model_id)
    if stored is not None:
        return stored, "the model's training (validation split)", 0
    head = _select(engine, select(decisions).where(decisions.c.model_id == model_id).order_by(decisions.c.id)
                   .limit(reference))  # fmt: skip
    if len(head) < reference:
        raise MierukaError(
            f"model {model_id[:12]}: {len(head)} decisions in the record, fewer than the {reference} its "
            "reference needs (its training stored none): wait for more, or lower --reference"
        )
    return reference_from_rows(head), f"the model's first {reference} decisions in the record", int(head[-1]["id"])


def monitor(
    engine: Engine,
    *,
    model: str | None = None,
    window: int = 500,
    since: float | None = None,
    until: float | None = None,
    reference: int = 500,
) -> DriftReport:
    """Compare the window with the reference (module docstring)."""
    model_id = _newest_model(engine) if model is None else _full_id(engine, model)
    ref, source, first_id = model_reference(engine, model_id, reference)
    chosen = Selection(model=model_id, since=since, until=until, last=None if since else window)
    current = [r for r in _rows(engine, chosen) if r["id"] > first_id]
    if not current:
        raise MierukaError(f"model {model_id[:12]}: no decisions after its reference to compare")
    report = DriftReport(
        model_id=model_id,
        reference={"source": source, "n": ref["n"], "ng_rate": ref["ng_rate"]},
        window={"n": len(current), "first": current[0]["time"], "last": current[-1]["time"]},
    )
    _compare_features(report, ref, current)
    _compare_classes(report, ref, current)
    _compare_ng_rate(report, ref, current)
    return report


def _full_id(engine: Engine, prefix: str) -> str:
    with engine.connect() as conn:
        found = conn.execute(select(models.c.model_id).where(models.c.model_id.startswith(prefix))).all()
    if len(found) != 1:
        raise MierukaError(f"--model {prefix}: {'no' if not found else 'more than one'} model in the record has it")
    return str(found[0][0])


def _compare_features(report: DriftReport, ref: dict[str, Any], current: list[dict[str, Any]]) -> None:
    for f in FEATURES:
        r = np.array(ref["features"].get(f, []), dtype=np.float64)
        c = np.array(values_of(current, f), dtype=np.float64)
        if len(r) < 2 or len(c) < 2:
            report.psi[f], report.p_values[f] = None, None
            continue
        edges, shares_r, shares_c = binned(r, c)  # once: the PSI's bins are the plot's
        value, p = _psi_of_shares(shares_r, shares_c), float(stats.ks_2samp(r, c).pvalue)
        report.psi[f], report.p_values[f] = round(value, 4), p
        report.histograms[f] = {
            "edges": [float(e) for e in edges],
            "reference": [round(float(v), 6) for v in shares_r],
            "window": [round(float(v), 6) for v in shares_c],
        }
        if value >= PSI_ALERT and p < P_ALERT:
            moved = "up" if np.median(c) > np.median(r) else "down"
            report.alerts.append({
                "feature": f, "psi": round(value, 4), "p_value": p,
                "message": f"{f} moved {moved}: median {np.median(r):.4g} → {np.median(c):.4g} (PSI {value:.2f})",
            })  # fmt: skip


def _compare_classes(report: DriftReport, ref: dict[str, Any], current: list[dict[str, Any]]) -> None:
    counts = Counter(x["class"] for x in current)
    mix = {c: k / len(current) for c, k in counts.items()}
    value = _categorical_psi(ref["classes"], mix)
    names = sorted(set(ref["classes"]) | set(mix))
    expected = np.array([max(ref["classes"].get(c, 0.0), _EPS) for c in names])
    observed = np.array([counts.get(c, 0) for c in names], dtype=np.float64)
    p = float(stats.chisquare(observed, expected / expected.sum() * observed.sum()).pvalue) if len(names) > 1 else 1.0
    report.psi["class_mix"], report.p_values["class_mix"] = round(value, 4), p
    report.classes = {"reference": ref["classes"], "window": mix}
    if value >= PSI_ALERT and p < P_ALERT:
        report.alerts.append({"feature": "class_mix", "psi": round(value, 4), "p_value": p,
                              "message": f"the class mix moved (PSI {value:.2f})"})  # fmt: skip


def _compare_ng_rate(report: DriftReport, ref: dict[str, Any], current: list[dict[str, Any]]) -> None:
    n = len(current)
    p0 = float(ref["ng_rate"])
    rate = sum(x["verdict"] == "NG" for x in current) / n
    lower, upper = _limits(p0, n)
    report.ng_rate = {"reference": p0, "window": rate, "lower": lower, "upper": upper, "chart": _p_chart(p0, current)}
    if rate > upper or rate < lower:
        message = f"NG rate {rate:.3f} outside its 3-sigma limits [{lower:.3f}, {upper:.3f}]"
        report.alerts.append({"feature": "ng_rate", "psi": None, "p_value": None, "message": message})


def _p_chart(p0: float, current: list[dict[str, Any]], groups: int = CHART_GROUPS) -> list[dict[str, float]]:
    """The window cut into at most ``groups`` consecutive subgroups: each one's NG rate and its 3-sigma limits."""
    points = []
    for part in np.array_split(np.arange(len(current)), min(groups, len(current))):
        n = len(part)
        lower, upper = _limits(p0, n)
        points.append({
            "n": n, "first": float(current[part[0]]["time"]),
            "rate": sum(current[i]["verdict"] == "NG" for i in part) / n, "lower": lower, "upper": upper,
        })  # fmt: skip
    return points


def _limits(p0: float, n: int) -> tuple[float, float]:
    """The 3-sigma binomial control limits of the NG rate of ``n`` decisions around ``p0``."""
    sigma = math.sqrt(max(p0 * (1 - p0), 1e-12) / n)
    return max(0.0, p0 - 3 * sigma), min(1.0, p0 + 3 * sigma)


def send_webhook(url: str, report: DriftReport, timeout: float = 10.0) -> None:
    """POST the report's JSON to ``url``."""
    body = json.dumps(report.as_json(), ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
