"""The line's record under load, in one run: ``mieruka serve`` with and without ``--record``, side by side.

1. Side by side: the service without a record, then with ``--record sqlite:///… --keep ng``, ``--rounds`` times
   (A B A B A B by default, on the same machine, one warm-up each); N concurrent clients × M requests
   (bench/serve_load.py's load: keep-alive connections, one image per request, overlay included). Reported: p50
   and throughput of each phase, and the ratios record / plain of their medians (and of each round).
2. Kill -9 under load: the recording service is killed with SIGKILL while N clients send (each request with its own
   ``X-Part-Id``), then restarted on the same record, ``--kills`` times; afterwards every request that was answered
   with ``"recorded": true`` must be in the record (``lost`` counts the ones that are not). The last killed service
   is not restarted: opening the record here writes what its journal held, as any reader does.
3. Export: ``--export-rows`` decisions written to a fresh record, then ``mieruka records URL --out F.csv`` timed as a
   command (its start-up included); and the History view's request (``GET /v1/records``, 50 rows: the newest, the
   newest NG, one part, a deep page) on that record, median of 21.

    python bench/record_load.py [--model MODEL.onnx] [--image IMAGE] [--clients 8] [--requests 50] [--kills 3]

Prints, as its last line, one JSON object: plain / record phases, p50_ratio, rps_ratio, meets_latency (p50_ratio ≤
1.1), meets_throughput (rps_ratio ≥ 0.9), kills, acknowledged, lost, recorded_rows, rows_with_kept_files (``--keep
ng``: the NG answers), export_rows, export_s, meets_export (≤ 10 s), history_ms, meets_history (≤ 300 ms).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description, default_onnx
from serve_load import _free_port, _load, _multipart, _request, _wait_until_up

from mieruka.data.synth import make_image


def _start(model: Path, port: int, record: str | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mieruka", "serve", str(model), "--port", str(port)]
    if record:
        cmd += ["--record", record, "--keep", "ng"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_until_up(port, server)
    return server


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()


def _phase(model: Path, record: str | None, body: bytes, ctype: str, clients: int, requests: int) -> dict[str, Any]:
    port = _free_port()
    server = _start(model, port, record)
    try:
        for _ in range(5):
            _request(port, body, ctype, None)
        result = _load(port, body, ctype, clients, requests, 600.0)
    finally:
        _stop(server)
    return result


def _kill_under_load(model: Path, record: str, data: bytes, clients: int, seconds: float) -> list[str]:
    """Start, load with part ids, SIGKILL after ``seconds``; the part ids answered with ``recorded: true``."""
    port = _free_port()
    server = _start(model, port, record)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while time.monotonic() < stop + 5:
            part = f"{server.pid}-{k}-{i}"
            i += 1
            body, ctype = _multipart("p.png", data)
            try:
                conn.request("POST", "/v1/predict?overlay=false", body=body,
                             headers={"Content-Type": ctype, "X-Part-Id": part})  # fmt: skip
                answer = json.loads(conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError):
                return  # the service is gone
            if answer.get("recorded"):
                with lock:
                    acknowledged.append(part)

    with ThreadPoolExecutor(clients + 1) as pool:
        futures = [pool.submit(client, k) for k in range(clients)]
        time.sleep(seconds)
        os.kill(server.pid, signal.SIGKILL)
        for f in futures:
            f.result()
    server.wait(30)
    return acknowledged


def _history_ms(model: Path, url: str, rows: int) -> dict[str, float]:
    """Median time of the History view's request on the record at ``url`` (the service's app, in process)."""
    from fastapi.testclient import TestClient

    from mieruka.model_file import load_runtime
    from mieruka.record.line import LineRecord
    from mieruka.record.store import Recorder
    from mieruka.serve import create_app

    runtime = load_runtime(model)
    line = LineRecord(Recorder(url, keep="none"), model, runtime.info, runtime.method)
    client = TestClient(create_app(runtime, record=line))
    out = {}
    for name, params in (("newest", {}), ("ng", {"verdict": "NG"}), ("part", {"part": f"P{rows - 1}"}),
                         ("page_deep", {"before": 1000})):  # fmt: skip
        times = []
        for _ in range(21):
            t = time.perf_counter()
            answer = client.get("/v1/records", params={"limit": 50, **params})
            times.append(1000 * (time.perf_counter() - t))
            assert answer.status_code == 200 and answer.json()["rows"]
        out[name] = round(statistics.median(times), 2)
    line.recorder.close()
    return out


def _export_rows(tmp: Path, rows: int) -> tuple[float, str]:
    from mieruka.record.store import Recorder

    url = f"sqlite:///{tmp / 'export' / 'records.db'}"
    recorder = Recorder(url, keep="none")
    rng = np.random.default_rng(0)
    base = {"model_id": "b" * 64, "model_version": "bench", "tta": "none", "method": "gradcam", "threshold": 0.5,
            "width": 224, "height": 224, "fragments": 1}  # fmt: skip
    for start in range(0, rows, 5000):
        n = min(5000, rows - start)
        p = rng.uniform(0.5, 1.0, n)
        batch = [{**base, "time": 1.78e9 + start + i, "part_id": f"P{start + i}", "filename": f"{start + i}.png",
                  "class": "crack", "probability": float(p[i]), "probabilities": '{"crack": 0.9, "good": 0.1}',
                  "verdict": "NG" if p[i] > 0.7 else "OK", "ng_probability": float(p[i]),
                  "brightness": 0.5, "contrast": 0.2, "sharpness": 0.01, "peak_x": 0.5, "peak_y": 0.5, "spread": 0.1}
                 for i in range(n)]  # fmt: skip
        assert recorder.record(batch, [[] for _ in batch])
    recorder.close()
    out = tmp / "export.csv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mieruka", "records", url, "--out", str(out)], check=True,
                   capture_output=True)  # fmt: skip
    seconds = time.perf_counter() - t
    with open(out, newline="", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.reader(fh)) == rows + 1
    return seconds, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help=".onnx file (default: the default model, exported now)")
    parser.add_argument("--image", type=Path, help="image to upload (default: a synthetic 224 × 224 crack)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client and phase")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs (plain, record) side by side")
    parser.add_argument("--kills", type=int, default=3, help="kill -9 restarts under load")
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds of load before each kill")
    parser.add_argument("--export-rows", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or default_onnx(tmp / "model.onnx")
        if args.image:
            data, name = args.image.read_bytes(), args.image.name
        else:
            gray, _ = make_image("crack", np.random.default_rng(0), 224)
            buf = io.BytesIO()
            Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(buf, "PNG")
            data, name = buf.getvalue(), "crack.png"
        body, ctype = _multipart(name, data)
        phases: dict[str, list[dict[str, Any]]] = {"plain": [], "record": []}
        for k in range(args.rounds):
            phases["plain"].append(_phase(model, None, body, ctype, args.clients, args.requests))
            url = f"sqlite:///{tmp / f'side{k}' / 'records.db'}"
            phases["record"].append(_phase(model, url, body, ctype, args.clients, args.requests))
        record_url = f"sqlite:///{tmp / 'kills' / 'records.db'}"
        acknowledged: list[str] = []
        for _ in range(args.kills):
            acknowledged += _kill_under_load(model, record_url, data, args.clients, args.kill_after)
        from mieruka.record.query import Selection, iter_rows, open_record

        rows: list[Any] = []
        if args.kills:
            engine = open_record(record_url)
            rows = [row for page in iter_rows(engine, Selection()) for row in page]
            engine.dispose()
        kept = {row[2] for row in rows}  # part_id is the third column
        with_files = sum(1 for row in rows if row[-2] is not None)  # image_file
        lost = [p for p in acknowledged if p not in kept]
        export_s, export_url = _export_rows(tmp, args.export_rows)
        history = _history_ms(model, export_url, args.export_rows)

    def median(name: str, key: str) -> float:
        return float(statistics.median(float(r[key]) for r in phases[name]))

    p50_ratio = median("record", "p50_ms") / median("plain", "p50_ms")
    rps_ratio = median("record", "rps") / median("plain", "rps")
    pairs = list(zip(phases["plain"], phases["record"], strict=True))  # each round's own ratio, as measured
    round_ratios = [{"p50": round(float(b["p50_ms"]) / float(a["p50_ms"]), 3), "rps": round(b["rps"] / a["rps"], 3)}
                    for a, b in pairs]  # fmt: skip
    print(json.dumps({
        "plain": phases["plain"], "record": phases["record"],
        "p50_ratio": round(p50_ratio, 3), "rps_ratio": round(rps_ratio, 3), "round_ratios": round_ratios,
        "meets_latency": p50_ratio <= 1.1, "meets_throughput": rps_ratio >= 0.9,
        "kills": args.kills, "acknowledged": len(acknowledged), "lost": len(lost),
        "recorded_rows": len(rows), "rows_with_kept_files": with_files,
        "export_rows": args.export_rows, "export_s": round(export_s, 2), "meets_export": export_s <= 10.0,
        "history_ms": history, "meets_history": max(history.values()) <= 300,
        "clients": args.clients, "image": name, "device": cpu_description(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
