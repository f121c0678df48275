"""The service records every answer: in process (TestClient), through `mieruka serve --record` with `kill -9`
restarts, and against a real PostgreSQL server started in a temporary folder."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM, browser_page, free_port, served

pytest.importorskip("sqlalchemy")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from mieruka.cli import main
from mieruka.errors import MierukaError
from mieruka.model_file import TorchModel
from mieruka.record.features import FEATURES
from mieruka.record.line import LineRecord
from mieruka.record.query import Selection, export
from mieruka.record.store import Recorder
from mieruka.serve import create_app


def _images(synth_dir: Path) -> list[Path]:
    return sorted((synth_dir / "crack").glob("*.png"))[:2] + sorted((synth_dir / "good").glob("*.png"))[:2]


def _rows(url: str, out: Path) -> list[dict[str, str]]:
    export(url, Selection(), out)
    return list(csv.DictReader(out.open(encoding="utf-8")))


def test_the_service_records_every_answer_with_its_part_id(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    model = tiny_run / "model.safetensors"
    runtime = TorchModel(model)
    url = f"sqlite:///{tmp_path / 'R' / 'records.db'}"
    line = LineRecord(Recorder(url, keep="ng"), model, runtime.info, runtime.method)
    client = TestClient(create_app(runtime, record=line))
    images = _images(synth_dir)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    answer = client.post("/v1/predict", files=files, headers={"X-Part-Id": "LOT7-0042"}).json()
    assert answer["recorded"] is True
    form = client.post("/v1/predict", files=files[:1], data={"part_id": "F-1"}).json()
    assert form["recorded"] is True
    too_long = client.post("/v1/predict", files=files[:1], headers={"X-Part-Id": "P" * 201})
    assert too_long.status_code == 422 and "200 characters" in too_long.text  # the record's column: refused, said
    described = client.get("/v1/model").json()["record"]
    assert described["model_id"] == hashlib.sha256(model.read_bytes()).hexdigest()
    line.recorder.sync()  # what the writer does every 0.2 s: another reader sees the answers from then on
    rows = _rows(url, tmp_path / "r.csv")
    assert [r["part_id"] for r in rows] == ["LOT7-0042"] * 4 + ["F-1"]
    for row, result in zip(rows, [*answer["results"], *form["results"]], strict=True):
        assert (row["filename"], row["class"], row["verdict"]) == (
            result["filename"],
            result["class"],
            result["verdict"],
        )
        assert float(row["probability"]) == pytest.approx(result["probability"], abs=1e-9)
        assert float(row["threshold"]) == result["threshold"] and row["model_id"] == described["model_id"]
        assert json.loads(row["probabilities"]).keys() == result["probabilities"].keys()
        assert 0 <= float(row["peak_x"]) <= 1 and int(row["fragments"]) >= 1 and float(row["brightness"]) > 0
        files_dir = tmp_path / "R" / "records-files"
        if result["verdict"] == "NG":  # --keep ng: the upload as sent, and its overlay
            sent = next(p for p in images if p.name == result["filename"]).read_bytes()
            assert (files_dir / row["image_file"]).read_bytes() == sent
            assert (files_dir / row["overlay_file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert row["image_file"] == "" and row["overlay_file"] == ""
    # the History view's API: newest first, filtered, a page at a time; kept files served, nothing else
    page = client.get("/v1/records", params={"limit": 3}).json()
    assert [r["part_id"] for r in page["rows"]] == ["F-1", "LOT7-0042", "LOT7-0042"] and page["next_before"]
    older = client.get("/v1/records", params={"limit": 3, "before": page["next_before"]}).json()["rows"]
    assert len(older) == 2 and older[0]["id"] < page["rows"][-1]["id"]
    ng = client.get("/v1/records", params={"verdict": "NG"}).json()["rows"]
    assert ng and all(r["verdict"] == "NG" for r in ng)
    shown = client.get(f"/v1/records/files/{ng[0]['image_file']}")
    assert shown.status_code == 200 and shown.content == (files_dir / ng[0]["image_file"]).read_bytes()
    assert client.get("/v1/records/files/../records.db").status_code == 404
    assert client.get("/v1/records/files/ab/" + "0" * 64 + ".png").status_code == 404
    drift = client.get("/v1/drift", params={"window": 5}).json()  # against the reference training stored
    assert drift["reference"]["source"] == "the model's training (validation split)"
    assert drift["window"]["n"] == 5 and isinstance(drift["alerts"], list) and "brightness" in drift["psi"]
    # another station reports what it found later: the newest decision of the part, or one by its id
    flagged = client.post("/v1/records/flags", json={"part_id": "LOT7-0042", "note": "failed the leak test"})
    assert flagged.status_code == 200 and flagged.json() == {"decision": page["rows"][1]["id"], "kind": "escape"}
    by_id = client.post("/v1/records/flags", json={"id": older[0]["id"], "kind": "overkill"})
    assert by_id.json() == {"decision": older[0]["id"], "kind": "overkill"}
    assert client.post("/v1/records/flags", json={"part_id": "NOPE"}).status_code == 404
    assert client.post("/v1/records/flags", json={"kind": "escape"}).status_code == 422  # which decision?
    assert client.post("/v1/records/flags", json={"id": 1, "kind": "maybe"}).status_code == 422
    line.recorder.close()


def test_the_exported_graph_carries_the_reference(tiny_run: Path, tiny_onnx: Path) -> None:
    """A service of the exported file compares the line with the same reference as one of the checkpoint."""
    from mieruka.checkpoint import read_info
    from mieruka.runtime import OnnxModel

    stored = read_info(tiny_run / "model.safetensors").summary["drift_reference"]
    assert OnnxModel(tiny_onnx).info.summary["drift_reference"] == stored


def test_training_stores_the_reference_the_service_would_record(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The reference is the validation images as the service records them: the same features, the same answers."""
    from mieruka.checkpoint import read_info
    from mieruka.record.reference import REFERENCE_KEY

    model = tiny_run / "model.safetensors"
    info = read_info(model)
    reference = info.summary[REFERENCE_KEY]
    val = info.load_dataset(synth_dir).split("val")
    assert reference["n"] == len(val) > 0 and set(reference["features"]) == set(FEATURES)
    runtime = TorchModel(model)
    url = f"sqlite:///{tmp_path / 'records.db'}"
    line = LineRecord(Recorder(url, keep="none", flush_s=3600.0), model, runtime.info, runtime.method)
    with TestClient(create_app(runtime, record=line)) as client:  # the service's start and stop
        for s in val:
            files = [("files", (s.image.name, s.image.read_bytes(), "image/png"))]
            assert client.post("/v1/predict", files=files, params={"overlay": "false"}).json()["recorded"]
        assert line.recorder.count() == 0  # all in the journal still
    assert list((tmp_path / "records-files.pending").iterdir()) == []  # the stopping service wrote it and removed it
    rows = _rows(url, tmp_path / "val.csv")
    for feature, column in (("brightness", "brightness"), ("sharpness", "sharpness"), ("confidence", "probability"),
                            ("peak_x", "peak_x"), ("spread", "spread")):  # fmt: skip
        recorded = sorted(float(r[column]) for r in rows)
        np.testing.assert_allclose(sorted(reference["features"][feature]), recorded, atol=1e-4, err_msg=feature)
    ng = sum(r["verdict"] == "NG" for r in rows) / len(rows)
    assert reference["ng_rate"] == pytest.approx(ng)


def _serve(model: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mieruka", "serve", str(model), "--record", url, "--port", str(port), "--keep", "none"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read().decode() if process.stderr else ''}")
    process.kill()
    raise AssertionError("serve did not start")


def _post(port: int, image: bytes, part: str) -> dict:
    boundary = "mierukaboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict?overlay=false",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Part-Id": part},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_no_acknowledged_answer_is_lost_when_the_service_is_killed(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The interface: serve --record sqlite:///R/records.db, POST with X-Part-Id, kill -9, restart: every answered
    request is in `mieruka records` with its part id."""
    url = f"sqlite:///{tmp_path / 'R' / 'records.db'}"
    image = _images(synth_dir)[0].read_bytes()
    acknowledged = []
    for run in range(2):
        port = free_port()
        process = _serve(tiny_run / "model.safetensors", url, port)
        try:
            for i in range(6):
                part = f"R{run}-{i}"
                if _post(port, image, part)["recorded"]:
                    acknowledged.append(part)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
    assert len(acknowledged) == 12
    out = tmp_path / "all.csv"
    assert main(["records", url, "--out", str(out)]) == 0
    assert [r["part_id"] for r in csv.DictReader(out.open(encoding="utf-8"))] == acknowledged


def _postgres_binaries() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb is None:
        for version in ("17", "16", "15"):
            candidate = Path(f"/usr/lib/postgresql/{version}/bin/initdb")
            if candidate.is_file():
                return candidate.parent
        return None
    return Path(os.path.realpath(initdb)).parent


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server in a temporary folder on a free port (skipped without the server binaries, as Debian's
    `postgresql` package installs them); run as the `postgres` user when the tests run as root."""
    pytest.importorskip("psycopg")
    bin_dir = _postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = tmp_path_factory.mktemp("pg")
    data, port = root / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
        for parent in root.parents:  # the server user must reach its folder
            if parent == Path(parent.anchor):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    user = "postgres" if as_user else os.environ.get("USER", "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "records")
        yield f"postgresql://{user}@127.0.0.1:{port}/records"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip


def test_the_record_works_the_same_on_postgresql(
    postgres_url: str, tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_run / "model.safetensors"
    runtime = TorchModel(model)
    with pytest.raises(MierukaError, match="give --record-files DIR, the folder of its kept images and of the answers"):
        Recorder(postgres_url, keep="none")  # the journal needs a folder on this machine, even with nothing kept
    line = LineRecord(Recorder(postgres_url, keep="ng", files=tmp_path / "files"), model, runtime.info, runtime.method)
    client = TestClient(create_app(runtime, record=line))
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in _images(synth_dir)]
    for k in range(3):
        assert client.post("/v1/predict", files=files, headers={"X-Part-Id": f"PG-{k}"}).json()["recorded"] is True
    line.recorder.close()
    rows = _rows(postgres_url, tmp_path / "pg.csv")
    assert [r["part_id"] for r in rows] == [f"PG-{k}" for k in range(3) for _ in range(4)]
    assert main(["records", postgres_url, "--part", "PG-1", "--out", str(tmp_path / "one.csv")]) == 0
    assert len(list(csv.DictReader((tmp_path / "one.csv").open(encoding="utf-8")))) == 4
    capsys.readouterr()
    assert main(["monitor", postgres_url, "--window", "8", "--json"]) in (0, 3)
    report = json.loads(capsys.readouterr().out)  # the reference training stored, read back from PostgreSQL
    assert report["reference"]["source"] == "the model's training (validation split)"
    assert report["reference"]["n"] == runtime.info.summary["drift_reference"]["n"] and report["window"]["n"] == 8
    # the review of its hard cases reads the kept images from the folder the service was given
    from mieruka.serve.review_records import review_items

    with pytest.raises(MierukaError, match="give --record-files DIR"):
        review_items(postgres_url)
    items, _, folder = review_items(postgres_url, below=1.01, files=tmp_path / "files")
    assert folder == tmp_path / "files" and items and all((folder / it["image_file"]).is_file() for it in items)


def test_train_adds_the_reviewed_production_images_to_the_training_split_only(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The interface: train DATA --corrections decisions.csv --add-records URL adds the recorded images the decisions
    label (record:ID), with their decided labels, to the training split, and says so in config.json."""
    from dataclasses import replace

    from conftest import TINY

    from mieruka.errors import DataError
    from mieruka.train import train

    model = tiny_run / "model.safetensors"
    runtime = TorchModel(model)
    url = f"sqlite:///{tmp_path / 'R' / 'records.db'}"
    line = LineRecord(Recorder(url, keep="all"), model, runtime.info, runtime.method)
    client = TestClient(create_app(runtime, record=line))
    for p in _images(synth_dir):
        answer = client.post("/v1/predict", files=[("files", (p.name, p.read_bytes(), "image/png"))]).json()
        assert answer["recorded"]
    line.recorder.close()
    recorded = _rows(url, tmp_path / "r.csv")
    # review --records: the hard cases (here every one: below probability 1.01), decisions to decisions.csv
    from mieruka.serve.review_records import create_records_review_app

    decisions = tmp_path / "decisions.csv"
    review = TestClient(create_records_review_app(url, decisions, below=1.01))
    items = review.get("/api/items").json()["items"]
    assert [it["id"] for it in items] == [4, 3, 2, 1]  # newest first, each with its kept image
    shown = review.get(f"/files/{items[-1]['image_file']}")
    assert shown.status_code == 200 and shown.content == _images(synth_dir)[0].read_bytes()
    assert "hard cases" in review.get("/").text
    for image, decision, label in (("record:1", "correct", None), ("record:2", "relabel", "good"),
                                   ("record:3", "exclude", None)):  # fmt: skip
        answer = review.post("/api/decisions", json={"image": image, "decision": decision, "label": label})
        assert answer.status_code == 200, answer.text
    assert review.post("/api/decisions", json={"image": "record:99", "decision": "correct"}).status_code == 404
    bad = review.post("/api/decisions", json={"image": "record:1", "decision": "relabel", "label": "nope"})
    assert bad.status_code == 422
    cfg = replace(TINY, epochs=1, corrections=str(decisions), add_records=url)
    train(synth_dir, tmp_path / "run", cfg, progress=False)
    added = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["added_records"]
    assert added["images"] == 2 and added["ids"] == [1, 2]
    assert added["by_class"] == dict(Counter([recorded[0]["class"], "good"]))
    split = list(csv.DictReader((tmp_path / "run" / "split.csv").open(encoding="utf-8")))
    kept = {Path(r["image"]).name: r for r in split if "records-files" in r["image"]}
    assert {k: (r["label"], r["split"]) for k, r in kept.items()} == {
        Path(recorded[0]["image_file"]).name: (recorded[0]["class"], "train"),
        Path(recorded[1]["image_file"]).name: ("good", "train"),
    }
    with pytest.raises(DataError, match="--add-records needs --corrections"):
        train(synth_dir, tmp_path / "r2", replace(TINY, add_records=url), progress=False)
    decisions.write_text("image,decision,label,comment,time\nrecord:99,correct,,,\n", encoding="utf-8")
    with pytest.raises(DataError, match="no decision with the id"):
        train(synth_dir, tmp_path / "r3", replace(cfg, corrections=str(decisions)), progress=False)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make test installs it)")
def test_the_line_record_and_drift_views_in_a_real_browser(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Judging images on the page fills the Line record view (newest first, overlays kept for NG, a click opens the
    input beside its heatmap) and the Drift view (the training's reference, the features, the NG rate)."""
    model = tiny_run / "model.safetensors"
    runtime = TorchModel(model)
    line = LineRecord(Recorder(f"sqlite:///{tmp_path / 'records.db'}", keep="all"), model, runtime.info, runtime.method)
    images = _images(synth_dir)
    with served(create_app(runtime, record=line)) as url, browser_page("en-US") as (page, errors):
        page.goto(url)
        page.wait_for_selector("#line:not([hidden])")
        page.set_input_files("#files", [str(p) for p in images])
        page.wait_for_function(f"document.querySelectorAll('#line-rows tr').length === {len(images)}")
        loaded = "sel => [...document.querySelectorAll(sel)].every(e => e.complete && e.naturalWidth > 0)"
        assert page.locator("#line-rows img.thumb").count() == len(images)  # every overlay kept (--keep all)
        page.wait_for_function(loaded, arg="#line-rows img.thumb")  # and shown
        page.locator("#line-rows tr").first.click()
        assert page.locator("#zoom img").count() == 2  # the input beside its heatmap
        page.wait_for_function(loaded, arg="#zoom img")
        page.wait_for_selector("#drift-body table")
        assert "the model's training (validation split)" in page.inner_text("#drift-body")
        assert "brightness" in page.inner_text("#drift-body table")
        # plots: a reference and a window bar per bin for each feature (10 bins of the reference's deciles at
        # most), the class mix too, and the p-chart's points
        assert page.locator("#drift-body tbody svg").count() == len(FEATURES) + 1
        assert page.locator("#drift-body tbody tr").first.locator("rect").count() % 2 == 0
        assert page.locator("#drift-body .pchart circle").count() >= 1
        page.select_option("#line-verdict", "OK")
        page.wait_for_function("[...document.querySelectorAll('#line-rows tr td:last-child')]"
                               ".every(td => td.textContent === 'OK')")  # fmt: skip
        assert not errors, errors
    line.recorder.close()


def test_monitor_posts_its_report_to_the_webhook_on_an_alert(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from mieruka.record.monitor import DriftReport, send_webhook

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        report = DriftReport("a" * 64, {"n": 5}, {"n": 3}, alerts=[{"feature": "brightness", "message": "moved"}])
        send_webhook(f"http://127.0.0.1:{server.server_port}/hook", report)
    finally:
        server.shutdown()
    assert received == [report.as_json()]
