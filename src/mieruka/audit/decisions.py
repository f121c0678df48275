"""Review decisions: what a person decided about an audited image, kept in ``AUDIT_DIR/decisions.csv``.

The file is append-only (``image, decision, label, comment, time``): every decision is a new row, written and
flushed to disk as it is made, so nothing is lost to a crash or a restart, and the history stays readable. The
current decision of an image is its last row. ``mieruka train --corrections decisions.csv`` reads the same file.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mieruka.data.csvfile import read_csv_rows
from mieruka.errors import DataError

__all__ = ["DECISIONS", "DECISIONS_HEADER", "MAX_COMMENT", "Decision", "DecisionLog", "read_decisions"]

DECISIONS = ("correct", "relabel", "region_wrong", "exclude")
"""correct: the label is right; relabel: the image belongs to ``label``; region_wrong: its marked region is wrong
(training does not use it); exclude: leave the image out of training."""

DECISIONS_HEADER = ("image", "decision", "label", "comment", "time")

MAX_COMMENT = 2000
"""Characters a decision's comment may hold (the review service answers 413 beyond)."""


@dataclass(frozen=True)
class Decision:
    """One reviewer's decision about one image."""

    image: str
    decision: str
    label: str = ""
    comment: str = ""
    time: str = ""

    def check(self, classes: Sequence[str] | None = None, where: str = "") -> Decision:
        """The decision itself, or a :class:`DataError` naming ``where`` when it is not a valid one."""
        at = f"{where}: " if where else ""
        if not self.image:
            raise DataError(f"{at}the decision names no image")
        if self.decision not in DECISIONS:
            raise DataError(f"{at}decision {self.decision!r} for {self.image}: choose one of {', '.join(DECISIONS)}")
        if self.decision == "relabel":
            if not self.label:
                raise DataError(f"{at}relabel of {self.image} names no label")
            if classes is not None and self.label not in classes:
                raise DataError(
                    f"{at}relabel of {self.image} to {self.label!r}: no such class; the classes are: "
                    f"{', '.join(classes)}"
                )
        return self


def read_decisions(path: str | os.PathLike[str]) -> list[tuple[int, Decision]]:
    """The current decisions of a ``decisions.csv`` (the last row per image wins), each with its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such decisions file (mieruka review writes one into the audit folder)")
    _, rows = read_csv_rows(path, required=("image", "decision"), what="decisions file")
    latest: dict[str, tuple[int, Decision]] = {}
    for line, row in rows:
        d = Decision(*(row.get(k, "") for k in DECISIONS_HEADER))
        latest[d.image] = (line, d.check(where=f"{path} line {line}"))
    return sorted(latest.values(), key=lambda pair: pair[0])


class DecisionLog:
    """The decisions of one audit folder: append one, read the current ones. Safe across threads."""

    def __init__(self, path: str | os.PathLike[str], classes: Sequence[str]):
        self.path = Path(path)
        self.classes = tuple(classes)
        self._lock = threading.Lock()

    def current(self) -> list[Decision]:
        if not self.path.is_file():
            return []
        return [d for _, d in read_decisions(self.path)]

    def add(self, decision: Decision) -> Decision:
        """Check and append ``decision`` (stamped with the time), flushed to disk before it returns."""
        d = decision.check(self.classes)
        d = Decision(d.image, d.decision, d.label if d.decision == "relabel" else "", d.comment, _now())
        with self._lock:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(DECISIONS_HEADER)
                row = asdict(d)
                writer.writerow([row[k] for k in DECISIONS_HEADER])
                fh.flush()
                os.fsync(fh.fileno())
        return d


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
