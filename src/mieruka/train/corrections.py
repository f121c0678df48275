"""``mieruka train --corrections decisions.csv``: a review's decisions applied to the data before training.

``relabel`` moves the image to its new class, ``exclude`` leaves it out, ``region_wrong`` drops its marked region
(the guide and the audits do not use it), ``correct`` changes nothing. Every decision must name an image of the
data set: the ones that do not are refused together, with their lines. What was applied is returned for the run's
``config.json`` (``"corrections"``); the run's ``split.csv`` holds the corrected labels.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from mieruka.audit.decisions import DECISIONS, read_decisions
from mieruka.data.dataset import Dataset
from mieruka.errors import DataError

__all__ = ["apply_corrections", "describe_corrections"]


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


def apply_corrections(dataset: Dataset, path: str | os.PathLike[str]) -> tuple[Dataset, dict[str, Any]]:
    """``dataset`` with the decisions of ``path`` applied, and the record of what changed."""
    decisions = [(line, d) for line, d in read_decisions(path) if not d.image.startswith("record:")]  # --add-records
    where = {_key(s.image): i for i, s in enumerate(dataset.samples)}
    unknown = [f"line {line} ({d.image})" for line, d in decisions if _key(d.image) not in where]
    if unknown:
        raise DataError(
            f"--corrections {path}: {len(unknown)} decision(s) name images that are not in {dataset.source}: "
            f"{', '.join(unknown[:10])}{' …' if len(unknown) > 10 else ''}; review an audit of the same data"
        )
    bad = [
        f"line {line} ({d.label!r})"
        for line, d in decisions
        if d.decision == "relabel" and d.label not in dataset.classes
    ]
    if bad:
        raise DataError(
            f"--corrections {path}: relabel to a class the data does not have: {', '.join(bad)}; the classes are: "
            f"{', '.join(dataset.classes)}"
        )
    samples: list[Any] = list(dataset.samples)
    changes = []
    for _, d in decisions:
        i = where[_key(d.image)]
        s = samples[i]
        if d.decision == "relabel" and d.label != s.label:
            samples[i] = replace(s, label=d.label, verdict=dataset.verdicts[d.label])
            changes.append({"image": str(s.image), "decision": "relabel", "from": s.label, "to": d.label})
        elif d.decision == "exclude":
            samples[i] = None
            changes.append({"image": str(s.image), "decision": "exclude", "from": s.label})
        elif d.decision == "region_wrong" and s.mask is not None:
            samples[i] = replace(s, mask=None)
            changes.append({"image": str(s.image), "decision": "region_wrong", "from": s.label})
    counts = Counter(d.decision for _, d in decisions)
    record = {
        "file": str(Path(path)),
        "decisions": len(decisions),
        **{k: counts.get(k, 0) for k in DECISIONS},
        "changes": changes,
    }
    return replace(dataset, samples=tuple(s for s in samples if s is not None)), record


def describe_corrections(record: dict[str, Any]) -> str:
    """One line for the training log: how many decisions, and the first changes."""
    changes = record["changes"]
    if not changes:
        return f"corrections: {record['decisions']} decision(s) from {record['file']}, nothing to change"
    said = [
        f"{c['decision']} {Path(c['image']).name}" + (f" {c['from']} → {c['to']}" if "to" in c else "")
        for c in changes[:5]
    ]
    more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
    return f"corrections: {len(changes)} change(s) from {record['file']}: {', '.join(said)}{more}"
