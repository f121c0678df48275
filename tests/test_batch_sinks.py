"""Row sinks: what a killed run wrote stays readable and is skipped by --resume (CSV and Parquet)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mieruka.batch.sinks import CsvSink, ParquetSink, open_sink
from mieruka.errors import MierukaError

HEADER = ("image", "class", "error")


def test_csv_sink_appends_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    sink = open_sink(path, HEADER)
    assert isinstance(sink, CsvSink)
    sink.write([("a.png", "good", ""), ("b.png", "", "truncated")])
    # killed here: the first chunk is on disk already
    assert path.read_text(encoding="utf-8").splitlines()[1:] == ["a.png,good,", "b.png,,truncated"]
    again = open_sink(path, HEADER, resume=True)
    assert again.done() == {"a.png", "b.png"}
    again.write([("c.png", "crack", "")])
    again.close()
    with open(path, newline="", encoding="utf-8") as fh:
        assert [r[0] for r in csv.reader(fh)] == ["image", "a.png", "b.png", "c.png"]
    with pytest.raises(MierukaError, match="other columns"):
        open_sink(path, ("image", "label"), resume=True)


def test_parquet_sink_keeps_parts_of_a_killed_run_and_merges_them(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    sink = open_sink(path, HEADER)
    assert isinstance(sink, ParquetSink)
    sink.write([("a.png", "good", "")])
    sink.write([("b.png", "", "truncated")])
    # killed before close: no merged file, two readable parts
    assert not path.exists() and len(list((tmp_path / "p.parquet.parts").glob("*.parquet"))) == 2
    again = open_sink(path, HEADER, resume=True)
    assert again.done() == {"a.png", "b.png"}
    again.write([("c.png", "crack", "")])
    again.close()
    table = pq.read_table(path)
    assert table.column_names == list(HEADER) and table.column("image").to_pylist() == ["a.png", "b.png", "c.png"]
    assert not (tmp_path / "p.parquet.parts").exists()
    # a finished file is resumed too
    finished = open_sink(path, HEADER, resume=True)
    assert finished.done() == {"a.png", "b.png", "c.png"}
    finished.close()
    assert pq.read_table(path).num_rows == 3
