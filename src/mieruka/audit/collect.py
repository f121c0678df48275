""" "What to collect next": the audit's errors and right-for-the-wrong-reason cases, per class and kind, with one
sentence each on the data that would address them.

The seed study's second conclusion is that explanations say which training data to collect. Per true class, the
audited images fall into kinds (escapes: NG parts passed; false rejects: OK parts rejected; class confusions: an NG
part rejected under another NG class; right for the wrong reason: correct while the map is off the defect), each
split by triage category. A group's traits are read against its own class: all of its images darker (brighter)
than the class's lower (upper) quartile of brightness, all of its defects smaller (larger) than the class's
quartile of region area, and the class they were most often taken for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KINDS", "CollectGroup", "what_to_collect"]

KINDS = ("escape", "false_reject", "confusion", "wrong_reason")
"""The kinds of case, in the order the report lists them."""


@dataclass(frozen=True)
class CollectGroup:
    """The images of one class, kind and triage category, and the sentence that says what data would help."""

    cls: str
    kind: str
    category: str
    images: tuple[str, ...]
    traits: tuple[str, ...] = ()
    taken_for: str = ""
    sentence: str = ""
    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)


def _kind(r: dict[str, Any]) -> str | None:
    ng_true, ng_said = r["true_verdict"] == "NG", r.get("verdict", r["predicted_verdict"]) == "NG"
    if ng_true and not ng_said:
        return "escape"
    if not ng_true and ng_said:
        return "false_reject"
    if r["true"] != r["predicted"] and ng_true:
        return "confusion"
    if r["true"] == r["predicted"] and r["category"] == "correct_off_target":
        return "wrong_reason"
    return None


def _value(r: dict[str, Any], key: str) -> float | None:
    v = r.get(key)
    if v in (None, ""):
        return None
    return float(v)


def _traits(members: Sequence[dict[str, Any]], peers: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """``dark``/``bright`` and ``small``/``large`` where every member lies beyond its class's quartile."""
    out = []
    for key, low, high in (("brightness", "dark", "bright"), ("area_fraction", "small", "large")):
        everyone = [v for v in (_value(r, key) for r in peers) if v is not None]
        mine = [_value(r, key) for r in members]
        if len(everyone) < 4 or any(v is None for v in mine):
            continue
        q1, q3 = np.quantile(everyone, [0.25, 0.75])
        values = [float(v) for v in mine if v is not None]
        if all(v < q1 for v in values):
            out.append(low)
        elif all(v > q3 for v in values):
            out.append(high)
    return tuple(out)


def what_to_collect(rows: Sequence[dict[str, Any]], classes: Sequence[str], t: dict[str, str]) -> list[CollectGroup]:
    """The groups of one method's rows (classification is the same for every method), by class, kind, category."""
    groups: list[CollectGroup] = []
    for cls in classes:
        peers = [r for r in rows if r["true"] == cls]
        by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in peers:
            kind = _kind(r)
            if kind is not None:
                by.setdefault((kind, r["category"]), []).append(r)
        for (kind, category), members in sorted(by.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
            traits = _traits(members, peers)
            taken = Counter(r["predicted"] for r in members if r["predicted"] != cls).most_common(1)
            group = CollectGroup(
                cls=cls,
                kind=kind,
                category=category,
                images=tuple(r["image"] for r in members),
                traits=traits,
                taken_for=taken[0][0] if taken else "",
                rows=tuple(members),
            )
            groups.append(_with_sentence(group, t))
    return groups


def _with_sentence(g: CollectGroup, t: dict[str, str]) -> CollectGroup:
    n = len(g.images)
    listed = t["collect_list"].join(t[f"trait_{x}"] for x in g.traits)
    parts = [t[f"collect_{g.kind}"].format(n=n)]
    if g.kind != "wrong_reason":  # its category (correct, off the defect) is what the kind already says
        parts.append(t[g.category])
    if g.traits:
        parts.append(t["collect_all"].format(words=listed) if n > 1 else listed)
    if g.taken_for:
        parts.append(t["collect_taken" if n > 1 else "collect_taken_one"].format(c=g.taken_for))
    like = t["collect_like"].format(words=listed) if g.traits else ""
    advice = t[f"advice_{g.kind}"].format(c=g.cls, like=like)
    sentence = f"{g.cls}: {t['collect_sep'].join(parts)}{t['collect_dash']}{advice}"
    return CollectGroup(g.cls, g.kind, g.category, g.images, g.traits, g.taken_for, sentence, g.rows)
