"""Row sinks that survive a kill: what was written stays readable, and a rerun with ``resume`` skips it.

* CSV (any other ending): rows are appended and flushed chunk by chunk; a killed run leaves every finished chunk.
* Parquet (``.parquet``, needs ``pyarrow``: ``pip install 'mieruka[parquet]'``): each chunk is written as a complete
  part file under ``<out>.parts/``; closing merges the parts into ``<out>`` (atomically) and removes them, so a
  killed run leaves readable parts that ``resume`` counts as done.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mieruka._io import atomic_write
from mieruka.errors import MierukaError

__all__ = ["CsvSink", "ParquetSink", "RowSink", "open_sink"]


class RowSink(Protocol):
    """Where a batch job's rows go."""

    def done(self) -> set[str]:
        """Keys (first column) of the rows already written by an earlier run (empty unless resuming)."""
        ...

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows (one chunk) and make them durable."""
        ...

    def close(self) -> None:
        """Finish the output."""
        ...


class CsvSink:
    """A UTF-8 CSV file, appended chunk by chunk."""

    def __init__(self, path: Path, header: Sequence[str], *, resume: bool):
        self.path, self.header = path, list(header)
        self._done: set[str] = set()
        if resume and path.is_file():
            _drop_torn_line(path)
        exists = path.is_file() and path.stat().st_size > 0
        if resume and exists:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                found = next(reader, [])
                if found != self.header:
                    raise MierukaError(
                        f"--resume: {path} has other columns than this run writes; use another --out or remove it"
                    )
                self._done = {row[0] for row in reader if row}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a" if resume and exists else "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        if not (resume and exists):
            self._writer.writerow(self.header)
            self._flush()

    def done(self) -> set[str]:
        return self._done

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._writer.writerows(rows)
        self._flush()

    def _flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _drop_torn_line(path: Path) -> None:
    """Cut a last line that was torn mid-write (a kill or a full disk: no line end), so that its image is done again
    and the next row starts on a line of its own."""
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        start = max(0, end - (1 << 20))
        fh.seek(start)
        tail = fh.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and start:  # a last line longer than the tail read: read it all
            fh.seek(0)
            start, tail = 0, fh.read()
            cut = tail.rfind(b"\n")
        fh.truncate(start + cut + 1)
        os.fsync(fh.fileno())


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MierukaError(
            "writing .parquet needs pyarrow: pip install 'mieruka[parquet]' (or use a .csv name)"
        ) from None
    return pa, pq


class ParquetSink:
    """A Parquet file made of one complete part file per chunk, merged on close (all columns as text, as in CSV)."""

    def __init__(self, path: Path, header: Sequence[str], *, resume: bool):
        self.pa, self.pq = _pyarrow()
        self.path, self.header = path, list(header)
        self.parts = path.with_name(path.name + ".parts")
        self._done: set[str] = set()
        if not resume:
            shutil.rmtree(self.parts, ignore_errors=True)
            path.unlink(missing_ok=True)
        elif path.is_file():  # a finished earlier run: its rows become the first part
            self.parts.mkdir(parents=True, exist_ok=True)
            table = self.pq.read_table(path)
            self._check(table.column_names)
            self.pq.write_table(table, self.parts / "part-00000.parquet")
            path.unlink()
        self.parts.mkdir(parents=True, exist_ok=True)
        for part in sorted(self.parts.glob("part-*.parquet")):
            table = self.pq.read_table(part, columns=[self.header[0]])
            self._done.update(str(v) for v in table.column(0).to_pylist())
        self._next = len(list(self.parts.glob("part-*.parquet")))

    def _check(self, columns: list[str]) -> None:
        if columns != self.header:
            raise MierukaError(f"--resume: {self.path} has other columns than this run writes; use another --out")

    def done(self) -> set[str]:
        return self._done

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        columns = {name: ["" if r[i] is None else str(r[i]) for r in rows] for i, name in enumerate(self.header)}
        table = self.pa.table(columns)
        part = self.parts / f"part-{self._next:05d}.parquet"
        atomic_write(part, lambda p: self.pq.write_table(table, p))
        self._next += 1

    def close(self) -> None:
        parts = sorted(self.parts.glob("part-*.parquet"))
        tables = [self.pq.read_table(p) for p in parts]
        for t in tables:
            self._check(t.column_names)
        empty = self.pa.table({name: self.pa.array([], self.pa.string()) for name in self.header})
        merged = self.pa.concat_tables(tables) if tables else empty
        atomic_write(self.path, lambda p: self.pq.write_table(merged, p))
        shutil.rmtree(self.parts, ignore_errors=True)


def open_sink(path: str | os.PathLike[str], header: Sequence[str], *, resume: bool = False) -> RowSink:
    """A Parquet sink for a ``.parquet`` name, else a CSV sink."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return ParquetSink(path, header, resume=resume)
    return CsvSink(path, header, resume=resume)
