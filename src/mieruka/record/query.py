"""Reading the record: a selection of decisions (time range, verdict, class, model, part), streamed in pages so that
memory stays flat, written to CSV or Parquet (``mieruka records``) or handed to the page and ``monitor``."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, select

from mieruka._io import atomic_write
from mieruka.errors import MierukaError
from mieruka.record.schema import decisions, migrate, open_engine

__all__ = ["COLUMNS", "Selection", "export", "iter_rows", "open_record", "parse_time"]

COLUMNS = tuple(c.name for c in decisions.columns)
PAGE = 5000

_log = logging.getLogger("mieruka.record")


def parse_time(text: str | None, option: str) -> float | None:
    """An ISO date or time (``2026-12-01``, ``2026-12-01T08:00``, with or without a zone; none: UTC) as seconds."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise MierukaError(
            f"{option} {text!r}: give an ISO date or time, e.g. 2026-12-01 or 2026-12-01T08:00"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Selection:
    """Which decisions: each condition given narrows it (``until`` is exclusive); ``last``: only the newest N."""

    since: float | None = None
    until: float | None = None
    verdict: str | None = None
    cls: str | None = None
    model: str | None = None
    part: str | None = None
    last: int | None = None

    def query(self) -> Select[Any]:
        q = select(decisions)
        for column, value in (
            (decisions.c.verdict, self.verdict),
            (decisions.c["class"], self.cls),
            (decisions.c.part_id, self.part),
        ):
            if value is not None:
                q = q.where(column == value)
        if self.model is not None:  # an id prefix, as git shows commits
            q = q.where(decisions.c.model_id.startswith(self.model))
        if self.since is not None:
            q = q.where(decisions.c.time >= self.since)
        if self.until is not None:
            q = q.where(decisions.c.time < self.until)
        if self.last is not None:
            newest = q.order_by(decisions.c.id.desc()).limit(self.last).subquery()
            return select(newest).order_by(newest.c.id)
        return q.order_by(decisions.c.id)


def open_record(url: str) -> Engine:
    """The record at ``url``, checked to be one (a missing SQLite file is an error, not a new empty record)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise MierukaError(f"{url}: no such record (serve --record {url} writes one)")
    engine = open_engine(url)
    migrate(engine)
    if engine.dialect.name == "sqlite":  # the answers a killed service left in its journal: written first
        from mieruka.record.store import files_folder, write_orphans

        try:
            write_orphans(engine, files_folder(engine, None))
        except Exception as exc:  # a read-only copy of the record, say: read what is there
            _log.warning("%s: the answers left in its journal are not written (%s)", url, exc)
    return engine


def iter_rows(engine: Engine, selection: Selection) -> Iterator[list[tuple[Any, ...]]]:
    """The selected rows in pages of at most :data:`PAGE`, oldest first, as tuples in :data:`COLUMNS` order."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=PAGE).execute(selection.query())
        for page in result.partitions(PAGE):
            yield [tuple(r) for r in page]


def export(url: str, selection: Selection, out: str | os.PathLike[str]) -> int:
    """Write the selected decisions to ``out`` (``.csv``, or ``.parquet`` with pyarrow); returns how many."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise MierukaError(f"--out {path}: give a .csv or .parquet file")
    engine = open_record(url)
    count = 0

    def write_csv(p: Path) -> None:
        nonlocal count
        with open(p, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for page in iter_rows(engine, selection):
                writer.writerows(page)
                count += len(page)

    def write_parquet(p: Path) -> None:
        nonlocal count
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MierukaError("--out *.parquet needs pyarrow: pip install 'mieruka[parquet]'") from None
        schema = pa.schema([(c.name, _arrow_type(pa, c.type.python_type)) for c in decisions.columns])
        with pq.ParquetWriter(str(p), schema) as writer:
            for page in iter_rows(engine, selection):
                columns = list(zip(*page, strict=True))
                writer.write_table(pa.table(columns, schema=schema))
                count += len(page)

    try:
        atomic_write(path, write_csv if suffix == ".csv" else write_parquet)
    finally:
        engine.dispose()
    return count


def _arrow_type(pa: Any, python: type) -> Any:
    return {int: pa.int64(), float: pa.float64()}.get(python, pa.string())
