"""The line's record: features, the recorder (journal, content-addressed files, retention), export, drift."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from mieruka.cli import main
from mieruka.record.features import FEATURES, heatmap_summary, image_features, tail_probability, unusual_heatmap
from mieruka.record.monitor import monitor, psi
from mieruka.record.query import Selection, export, open_record
from mieruka.record.store import Kept, Recorder

CLASSES = ("good", "crack")


def test_image_features_of_known_images() -> None:
    flat = np.full((32, 32, 3), 51, np.uint8)
    f = image_features(flat)
    assert f.brightness == pytest.approx(0.2) and f.contrast == pytest.approx(0.0, abs=1e-12) and f.sharpness == 0.0
    stripes = np.zeros((32, 32), np.uint8)
    stripes[:, ::2] = 255
    g = image_features(stripes)
    assert g.brightness == pytest.approx(0.5) and g.contrast == pytest.approx(0.5)
    assert g.sharpness > image_features(np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None], 32, 0)).sharpness


def test_heatmap_summary_finds_the_peak_the_spread_and_the_pieces() -> None:
    heat = np.zeros((10, 20), np.float32)
    heat[2, 15] = 1.0
    heat[7:9, 2:4] = 0.8
    s = heatmap_summary(heat)
    assert (s.peak_x, s.peak_y) == (pytest.approx(15.5 / 20), pytest.approx(2.5 / 10))
    assert s.fragments == 2 and s.spread == pytest.approx(5 / 200)
    shifted = heatmap_summary(heat * 3.0 - 2.0)  # "half its maximum" lies between the map's minimum and maximum
    assert (shifted.peak_x, shifted.peak_y, shifted.spread, shifted.fragments) == (s.peak_x, s.peak_y, s.spread, 2)
    flat = heatmap_summary(np.full((4, 8), 0.3, np.float32))
    assert (flat.peak_x, flat.peak_y, flat.spread, flat.fragments) == (1 / 16, 1 / 8, 0.0, 0)


def test_heatmaps_summarised_together_are_summarised_as_one_by_one() -> None:
    from mieruka.record.features import heatmap_summaries, in_stacks

    rng = np.random.default_rng(11)
    pieces = np.zeros((12, 12), np.float32)
    pieces[1, 1] = pieces[5, 5] = pieces[9, 2] = 1.0  # three pieces
    noise = [rng.random(shape).astype(np.float32) for shape in ((12, 12), (30, 20))]
    maps = [noise[0], np.zeros((12, 12), np.float32), pieces, noise[1], pieces * 2 - 1, (noise[0] > 0.7) * 1.0]
    together = in_stacks(heatmap_summaries, maps)  # two sizes, a flat map between maps with pieces
    assert together == [heatmap_summary(m) for m in maps]
    assert [s.fragments for s in together][1:3] == [0, 3] and together[4].fragments == 3


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0.5, 0.1, 2000)
    assert psi(ref, rng.normal(0.5, 0.1, 500)) < 0.05
    assert psi(ref, rng.normal(0.3, 0.1, 500)) > 1.0  # darker by two standard deviations


def _row(i: int, rng: np.random.Generator, brightness: float = 0.5, ng: float = 0.2) -> dict[str, Any]:
    verdict = "NG" if rng.random() < ng else "OK"
    p = float(rng.uniform(0.6, 1.0))
    return {
        "time": 1_780_000_000.0 + i,
        "part_id": f"P{i:05d}",
        "model_id": "a" * 64,
        "model_version": "test",
        "filename": f"{i}.png",
        "class": "crack" if verdict == "NG" else "good",
        "probability": p,
        "probabilities": json.dumps({"good": 1 - p, "crack": p}),
        "verdict": verdict,
        "ng_probability": p if verdict == "NG" else 1 - p,
        "threshold": 0.5,
        "tta": "none",
        "method": "gradcam",
        "width": 64,
        "height": 64,
        "brightness": float(rng.normal(brightness, 0.05)),
        "contrast": float(rng.normal(0.2, 0.02)),
        "sharpness": float(rng.normal(0.01, 0.002)),
        "peak_x": float(rng.uniform(0.2, 0.8)),
        "peak_y": float(rng.uniform(0.2, 0.8)),
        "spread": float(rng.uniform(0.05, 0.2)),
        "fragments": 1,
    }


class _Info:
    version, classes, verdicts = "test", CLASSES, {"good": "OK", "crack": "NG"}


def _recorder(tmp_path: Path, **kw: Any) -> Recorder:
    kw.setdefault("flush_s", 3600.0)  # written to the database by sync() or close() only: no test races the writer
    rec = Recorder(f"sqlite:///{tmp_path / 'r' / 'records.db'}", **kw)
    rec.register_model("a" * 64, _Info(), "model.safetensors", None)
    return rec


def test_the_recorder_journals_before_it_answers_writes_once_and_keeps_files_once(tmp_path: Path) -> None:
    rec = _recorder(tmp_path, keep="ng")
    rng = np.random.default_rng(1)
    png = b"\x89PNG fake bytes"
    rows = [_row(i, rng) for i in range(3)]
    assert rec.record(rows, [[Kept(png, ".png")], [Kept(png, ".png")], []])
    journal = [json.loads(line) for line in rec.journal.path.read_text(encoding="utf-8").splitlines()]
    assert [r["part_id"] for r in journal] == ["P00000", "P00001", "P00002"]  # in the file when record() returned
    assert rec.count() == 0 and rec.sync() == 3 and rec.count() == 3
    assert rec.sync() == 0 and rec.count() == 3  # written once
    digest = hashlib.sha256(png).hexdigest()
    kept = tmp_path / "r" / "records-files" / digest[:2] / f"{digest}.png"
    assert kept.read_bytes() == png and len(list((tmp_path / "r" / "records-files").rglob("*.png"))) == 1
    out = tmp_path / "all.csv"
    assert export(rec.url, Selection(), out) == 3
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["part_id"] for r in got] == ["P00000", "P00001", "P00002"]
    assert got[0]["image_file"] == f"{digest[:2]}/{digest}.png" and got[2]["image_file"] == ""
    rec.close()


_KILLED_SERVICE = """
import json, os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_record import _row
from mieruka.record.store import Recorder
rec = Recorder(sys.argv[1], keep="none", flush_s=3600.0)
rng = np.random.default_rng(7)
assert rec.record([_row(i, rng) for i in range(2)], [[], []]) and rec.sync() == 2  # written, its offset stored
later = [{k: v for k, v in _row(2 + i, rng).items() if k != "brightness"} for i in range(3)]
rec.complete = lambda attached: [{"brightness": a} for a in attached]
assert rec.record(later, [[], [], []], [0.5] * 3)  # journaled only, its features to come
os.write(rec.journal.fd, b'{"time": 1780000099.0, "part_id": "CU')  # the kill cuts a line being written
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_services_journal_is_written_once_by_the_next_that_opens_the_record(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'r' / 'records.db'}"
    child = subprocess.run([sys.executable, "-c", _KILLED_SERVICE, url, str(Path(__file__).parent)], timeout=120)
    assert child.returncode == -9
    pending = tmp_path / "r" / "records-files.pending"
    assert len(list(pending.glob("*.jsonl"))) == 1
    out = tmp_path / "all.csv"
    assert export(url, Selection(), out) == 5  # the reader wrote the three journaled rows first, not the cut line
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["part_id"] for r in got] == [f"P{i:05d}" for i in range(5)]
    assert [r["brightness"] == "" for r in got] == [False, False, True, True, True]  # the decision, not its features
    assert list(pending.glob("*.jsonl")) == [] and export(url, Selection(), out) == 5
    engine = open_record(url)
    with engine.connect() as conn:
        assert [k for (k,) in conn.exec_driver_sql("SELECT key FROM mieruka_meta")] == ["schema_version"]
    engine.dispose()


def test_a_live_services_journal_is_left_to_it_and_a_long_one_is_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mieruka.record.store as store

    rec = _recorder(tmp_path, keep="none")
    rng = np.random.default_rng(8)
    assert rec.record([_row(i, rng) for i in range(3)], [[], [], []])
    assert export(rec.url, Selection(), tmp_path / "a.csv") == 0  # its process lives: not an orphan
    monkeypatch.setattr(store, "ROTATE_BYTES", 1)
    first = rec.journal.path
    assert rec.sync() == 3 and not first.exists() and rec.journal.path != first  # all written: a new file
    assert rec.record([_row(3, rng)], [[]]) and rec.sync() == 1 and rec.count() == 4
    bare = {k: v for k, v in _row(4, rng).items() if k not in ("brightness", "spread")}
    rec.complete = lambda attached: [{"brightness": 1 / a, "spread": a / 8} for a in attached]  # all at once
    assert rec.record([bare, bare], [[], []], [2.0, 4.0]) and rec.record([bare], [[]]) and rec.sync() == 3
    assert rec.record([bare], [[]], [0.0]) and rec.sync() == 1  # features that fail: the decision kept without
    with rec.engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT brightness, spread, verdict FROM decisions WHERE id > 4").fetchall()
    v = bare["verdict"]
    assert got == [(0.5, 0.25, v), (0.25, 0.5, v), (None, None, v), (None, None, v)]
    refused = {**_row(5, rng), "class": None}  # NOT NULL: the database refuses it, and only it
    assert rec.record([_row(6, rng), refused, _row(7, rng)], [[], [], []]) and rec.sync() == 2 and rec.failed == 1
    assert rec.sync() == 0 and rec.count() == 10
    rec.close()
    assert list((tmp_path / "r" / "records-files.pending").glob("*")) == []
    assert export(rec.url, Selection(), tmp_path / "b.csv") == 10


def test_a_line_cut_by_a_full_disk_spoils_no_later_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import mieruka.record.journal as journal

    rec = _recorder(tmp_path, keep="none")
    rng = np.random.default_rng(10)
    real = os.write
    monkeypatch.setattr(journal.os, "write", lambda fd, data: real(fd, data[: len(data) // 2]))  # the disk fills
    assert not rec.record([_row(0, rng)], [[]]) and rec.failed == 1
    monkeypatch.setattr(journal.os, "write", real)  # room again
    assert rec.record([_row(1, rng)], [[]])
    lines = rec.journal.path.read_bytes().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["part_id"] == "P00001"
    assert rec.sync() == 1 and rec.count() == 1
    rec.close()


def test_answers_say_not_recorded_when_too_much_waits_for_the_database(tmp_path: Path) -> None:
    rec = _recorder(tmp_path, keep="none", max_pending_mb=1e-4)  # about 100 bytes: one row's line is more
    rng = np.random.default_rng(9)
    assert rec.record([_row(0, rng)], [[]]) and not rec.record([_row(1, rng)], [[]]) and rec.failed == 1
    assert rec.sync() == 1 and rec.record([_row(2, rng)], [[]])  # written: room again
    rec.close()


def test_the_writer_stores_every_column_as_given(tmp_path: Path) -> None:
    """The writer's insert goes to the driver directly (no SQLAlchemy parameter handling): every value comes back."""
    from sqlalchemy import select

    from mieruka.record.schema import decisions

    rec = _recorder(tmp_path, keep="none")
    rng = np.random.default_rng(3)
    rows = [_row(i, rng) for i in range(2)]
    rows[1]["part_id"] = None  # a decision without a part id
    rows[0]["filename"] = 'ひび\n割れ "A".png'  # through the journal's JSON lines as it came
    assert rec.record(rows, [[], []]) and rec.sync() == 2
    with rec.engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(select(decisions).order_by(decisions.c.id))]
    rec.close()
    for want, row in zip(rows, got, strict=True):
        assert {k: row[k] for k in want} == want and row["image_file"] is None and row["overlay_file"] is None


def test_retention_removes_old_files_and_their_names_but_keeps_the_rows(tmp_path: Path) -> None:
    import os

    rec = _recorder(tmp_path, keep="all", retention=(1.0, None))
    rng = np.random.default_rng(2)
    assert rec.record([_row(0, rng), _row(1, rng)], [[Kept(b"old", ".png")], [Kept(b"new", ".png")]])
    rec.sync()
    files = sorted((tmp_path / "r" / "records-files").rglob("*.png"))
    old = next(p for p in files if p.read_bytes() == b"old")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert rec.prune() == 1 and not old.exists()
    out = tmp_path / "x.csv"
    export(rec.url, Selection(), out)
    names = [r["image_file"] for r in csv.DictReader(out.open(encoding="utf-8"))]
    assert names[0] == "" and names[1].endswith(".png")  # the decision stays; only the file is gone
    rec.retain_days, rec.retain_gb = None, 0.0  # a size limit of nothing removes what is left
    assert rec.prune() == 1
    rec.close()


def test_records_selects_and_writes_csv_and_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _recorder(tmp_path, keep="none")
    rng = np.random.default_rng(3)
    rec.record([_row(i, rng) for i in range(50)], [[] for _ in range(50)])
    rec.close()
    url = rec.url
    assert main(["records", url, "--verdict", "NG", "--out", str(tmp_path / "ng.csv")]) == 0
    ng = list(csv.DictReader((tmp_path / "ng.csv").open(encoding="utf-8")))
    assert ng and all(r["verdict"] == "NG" for r in ng)
    since = "2026-05-28T20:27:00+00:00"  # 1_780_000_000 + 20 s, as an ISO time
    assert main(["records", url, "--since", since, "--out", str(tmp_path / "late.parquet")]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "late.parquet")
    assert table.num_rows == 30 and min(table.column("time").to_pylist()) == 1_780_000_020.0
    assert main(["records", url, "--since", "yesterday", "--out", str(tmp_path / "z.csv")]) == 2
    assert "--since 'yesterday': give an ISO date" in capsys.readouterr().err
    assert main(["records", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "z.csv")]) == 2


def test_monitor_is_quiet_on_a_stable_line_and_names_what_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = _recorder(tmp_path, keep="none")
    rng = np.random.default_rng(4)
    rec.record([_row(i, rng) for i in range(800)], [[] for _ in range(800)])  # reference 500, then 300 alike
    rec.sync()
    url = rec.url
    capsys.readouterr()
    assert main(["monitor", url, "--window", "300", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alerts"] == [] and set(report["psi"]) == {*FEATURES, "class_mix"}
    assert report["reference"]["n"] == 500 and report["window"]["n"] == 300
    rec.record([_row(800 + i, rng, brightness=0.3) for i in range(300)], [[] for _ in range(300)])  # darker by 40 %
    rec.sync()
    assert report["histograms"]["brightness"]["reference"] == pytest.approx([0.1] * 10, abs=0.002)  # its deciles
    assert max(abs(w - 0.1) for w in report["histograms"]["brightness"]["window"]) < 0.06  # a stable line's window
    chart = report["ng_rate"]["chart"]
    assert [p["n"] for p in chart] == [30] * 10 and all(p["lower"] <= p["rate"] <= p["upper"] for p in chart)
    plot = tmp_path / "drift" / "drift.png"
    assert main(["monitor", url, "--window", "300", "--json", "--plot", str(plot)]) == 3
    darker = json.loads(capsys.readouterr().out)
    alerts = darker["alerts"]
    assert [a["feature"] for a in alerts] == ["brightness"] and "moved down" in alerts[0]["message"]
    assert darker["histograms"]["brightness"]["window"][0] > 0.9  # nearly all below the reference's first decile
    assert main(["monitor", url, "--window", "300", "--plot", "/dev/null/drift.png"]) == 2  # named, not a traceback
    assert "--plot /dev/null/drift.png: cannot write it" in capsys.readouterr().err
    from PIL import Image

    with Image.open(plot) as picture:
        assert picture.size == (1200, 840)  # 3 × 3 panels: 7 features, the class mix, the p-chart
    engine = open_record(url)
    ng_jump = monitor(engine, window=300)
    assert ng_jump.psi["brightness"] is not None and ng_jump.psi["brightness"] > 0.25
    engine.dispose()
    rec.record([_row(1100 + i, rng, ng=0.6) for i in range(300)], [[] for _ in range(300)])  # NG rate 0.2 → 0.6
    rec.sync()
    assert main(["monitor", url, "--window", "300"]) == 3
    assert "ALERT: NG rate" in capsys.readouterr().out
    rec.close()


def test_tail_probability_and_the_unusual_heatmap() -> None:
    ref = list(np.linspace(0.0, 1.0, 99))  # n = 99
    assert tail_probability(0.5, ref) == 1.0  # the median
    assert tail_probability(2.0, ref) == pytest.approx(2 / 100)  # beyond the whole reference: the least there is
    assert tail_probability(ref[4], ref) == pytest.approx(2 * 6 / 100)  # 5 at or below it
    reference = {"features": {"peak_x": ref, "peak_y": ref, "spread": list(np.linspace(0.05, 0.2, 99))}}
    assert unusual_heatmap({"peak_x": 0.5, "peak_y": 0.5, "spread": 0.1}, reference)[1] > 0.5
    assert unusual_heatmap({"peak_x": 0.5, "peak_y": 0.5, "spread": 0.9}, reference) == ("spread", pytest.approx(0.02))
    assert unusual_heatmap({"peak_x": None, "peak_y": None, "spread": None}, reference) == ("", 1.0)


def test_review_of_the_record_lists_ng_hesitant_and_far_heatmaps_with_their_reasons(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mieruka.serve.review_records import create_records_review_app

    rec = _recorder(tmp_path, keep="all")
    rng = np.random.default_rng(5)
    head = [_row(i, rng, ng=0.0) for i in range(500)]  # the reference: the model's first 500 decisions, all OK
    for r in head:
        r["probability"] = 0.9
    rec.record(head, [[] for _ in head])  # no kept file: never listed
    later = [_row(500 + i, rng, ng=0.0) for i in range(4)]
    for r in later:
        r["probability"] = 0.9
    later[0]["verdict"] = "NG"
    later[1]["probability"] = 0.55
    later[2]["spread"] = 0.9  # far beyond the reference's 0.05-0.2
    rec.record(later, [[Kept(f"img{i}".encode(), ".png")] for i in range(4)])
    url = rec.url
    rec.close()
    decisions = tmp_path / "decisions.csv"
    items = TestClient(create_records_review_app(url, decisions)).get("/api/items").json()["items"]
    assert [it["id"] for it in items] == [503, 502, 501]  # newest first; the ordinary one is not listed
    assert items[0]["reasons"][0].startswith("heatmap spread far from the reference (tail 0.004")
    assert items[1]["reasons"] == ["probability below 0.6"] and items[2]["reasons"] == ["NG"]
    off = TestClient(create_records_review_app(url, decisions, far=0)).get("/api/items").json()["items"]
    assert [it["id"] for it in off] == [502, 501]


def test_a_decision_flagged_later_is_reviewed_first_and_a_version_1_record_is_brought_forward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from fastapi.testclient import TestClient

    from mieruka.record.flags import flags_of
    from mieruka.serve.review_records import create_records_review_app

    rec = _recorder(tmp_path, keep="all")
    rng = np.random.default_rng(6)
    rows = [_row(i, rng, ng=0.0) for i in range(3)]
    for r in rows:
        r["probability"] = 0.95  # confident passes: nothing would list them
    rec.record(rows, [[Kept(f"ok{i}".encode(), ".png")] for i in range(3)])
    url = rec.url
    rec.close()
    db = tmp_path / "r" / "records.db"
    with sqlite3.connect(db) as conn:  # as a record of schema version 1 was: no flags table
        conn.execute("DROP TABLE flags")
        conn.execute("UPDATE mieruka_meta SET value = '1' WHERE key = 'schema_version'")
    capsys.readouterr()
    assert main(["flag", url, "--part", "P00001", "--note", "crack found at the final test"]) == 0
    assert capsys.readouterr().out.strip() == "decision 2 flagged: escape"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM mieruka_meta WHERE key = 'schema_version'").fetchone() == ("2",)
    assert main(["flag", url, "--id", "99"]) == 2  # no such decision: refused, named
    assert "decision 99: no such decision" in capsys.readouterr().err
    review = TestClient(create_records_review_app(url, tmp_path / "decisions.csv", far=0))
    items = review.get("/api/items").json()["items"]
    assert [it["id"] for it in items] == [2]
    assert items[0]["reasons"] == ["flagged later: escape (crack found at the final test)"]
    engine = open_record(url)
    assert [f.kind for f in flags_of(engine)[2]] == ["escape"]
    engine.dispose()


def test_record_files_go_with_add_records() -> None:
    from mieruka.config import TrainConfig

    with pytest.raises(ValueError, match="--record-files goes with --add-records URL"):
        TrainConfig(record_files="/srv/line-files")
    assert TrainConfig(add_records="postgresql://line/records", record_files="/srv/line-files").record_files
