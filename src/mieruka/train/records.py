"""``mieruka train DATA --corrections decisions.csv --add-records URL``: production images the line recorded, with
the labels a person decided, added to the training split.

A decision names a recorded image as ``record:ID`` (ID: its row in the record, as ``mieruka records`` exports it):
``correct`` adds the image with the class the model gave it, ``relabel`` with the decided class; ``exclude`` and
``region_wrong`` add nothing. The images are the files the service kept (``serve --keep``); a decision about an
image the service did not keep is refused by its ID. They join the training split only, never validation or
test, so the figures that judge the model stay on the data set's own images. What was added is recorded in the
run's ``config.json`` (``"added_records"``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from typing import Any

from mieruka.audit.decisions import Decision, read_decisions
from mieruka.data.dataset import Dataset
from mieruka.data.sample import Sample
from mieruka.errors import DataError

__all__ = ["RECORD_PREFIX", "add_records", "describe", "record_decisions"]

RECORD_PREFIX = "record:"


def record_decisions(path: str | os.PathLike[str]) -> dict[int, Decision]:
    """The last decision about each recorded image (``record:ID``) in a decisions file."""
    out: dict[int, Decision] = {}
    for line, d in read_decisions(path):
        if d.image.startswith(RECORD_PREFIX):
            try:
                out[int(d.image.removeprefix(RECORD_PREFIX))] = d
            except ValueError:
                raise DataError(f"{path}: line {line}: {d.image!r} is not record:ID") from None
    return out


def add_records(
    dataset: Dataset, url: str, corrections: str | os.PathLike[str], files: str | os.PathLike[str] | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """``dataset`` with the recorded images the decisions of ``corrections`` label, in its training split (``files``:
    the record's folder of kept files, for a server database)."""
    decided = record_decisions(corrections)
    if not decided:
        raise DataError(
            f"--add-records: {corrections} decides about no recorded image (record:ID): review the line's images "
            "first, or leave --add-records out"
        )
    from sqlalchemy import select

    from mieruka.record.query import open_record
    from mieruka.record.schema import decisions
    from mieruka.record.store import files_folder

    engine = open_record(url)
    try:
        folder = files_folder(engine, files)
        with engine.connect() as conn:
            found = conn.execute(
                select(decisions.c.id, decisions.c["class"], decisions.c.image_file).where(
                    decisions.c.id.in_(sorted(decided))
                )
            ).all()
    finally:
        engine.dispose()
    rows = {int(r[0]): (str(r[1]), r[2]) for r in found}
    missing = sorted(set(decided) - set(rows))
    if missing:
        raise DataError(f"--add-records {url}: no decision with the id(s) {', '.join(map(str, missing[:10]))}")
    added, unkept = [], []
    for row_id, d in sorted(decided.items()):
        if d.decision not in ("correct", "relabel"):
            continue
        label = d.label if d.decision == "relabel" else rows[row_id][0]
        if label not in dataset.classes:
            raise DataError(
                f"--add-records: record:{row_id} is labelled {label!r}, not a class of the data "
                f"({', '.join(dataset.classes)})"
            )
        kept = rows[row_id][1]
        if kept is None or not (folder / kept).is_file():
            unkept.append(row_id)
            continue
        added.append(Sample(image=folder / kept, label=label, verdict=dataset.verdicts[label], split="train"))
    if unkept:
        raise DataError(
            f"--add-records: the service kept no image for record:{', record:'.join(map(str, unkept[:10]))} "
            "(serve --keep all keeps every one; --keep ng the NG ones)"
        )
    record = {
        "url": re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url),
        "images": len(added),
        "by_class": dict(Counter(s.label for s in added)),
        "ids": [int(i) for i, d in sorted(decided.items()) if d.decision in ("correct", "relabel")],
    }
    return replace(dataset, samples=(*dataset.samples, *added)), record


def describe(record: dict[str, Any]) -> str:
    by_class = ", ".join(f"{c} {n}" for c, n in sorted(record["by_class"].items()))
    return f"added records: {record['images']} production image(s) to the training split ({by_class})"
