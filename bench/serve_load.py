"""Load test of ``mieruka serve`` on loopback, against the bare ONNX Runtime call, in one run.

1. The bare call: the same ONNX file and the same preprocessed image, ``session.run`` for probabilities + heatmap,
   timed in this process — once one call at a time, once from as many concurrent threads as the load test has
   clients (the same demand on the same cores, without HTTP, decoding or the overlay).
2. The service: ``mieruka serve MODEL`` started as its own process; a warm-up; one client alone; then N concurrent
   clients × M requests each (keep-alive connections, one single-image multipart upload per request, heatmap overlay
   PNG included in every answer). The test is bounded: it stops after N × M requests or ``--deadline`` seconds.

    python bench/serve_load.py [--model MODEL.onnx] [--image IMAGE] [--clients 8] [--requests 100] [--workers 1]

Default model: tf_efficientnet_lite0 (6 classes, offline ImageNet backbone) at 224 × 224, exported by mieruka.
Default image: a synthetic 224 × 224 crack image (PNG).

Prints, as its last line, one JSON object: requests, errors, p50_ms, p99_ms, rps (the load test), bare_p50_ms (the
bare call under the same concurrency), bare_sequential_p50_ms, single_client_p50_ms, and floor_ms = 1.5 ×
bare_p50_ms + 15 with meets_floor (p50_ms ≤ floor_ms), and the CPU time the server (with its worker processes)
and this load generator spent per request during the load test.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description, default_onnx

from mieruka.data.images import read_image
from mieruka.data.synth import make_image
from mieruka.runtime import OnnxModel, prepare


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _bare(runtime: OnnxModel, x: np.ndarray, clients: int, requests: int) -> tuple[float, float]:
    """p50 (ms) of the bare call, one at a time and from ``clients`` threads at once."""
    for _ in range(5):
        runtime.run(x)
    seq = []
    for _ in range(requests):
        t = time.perf_counter()
        runtime.run(x)
        seq.append(time.perf_counter() - t)

    def worker(_: int) -> list[float]:
        out = []
        for _ in range(requests):
            t = time.perf_counter()
            runtime.run(x)
            out.append(time.perf_counter() - t)
        return out

    with ThreadPoolExecutor(clients) as pool:
        conc = [t for ts in pool.map(worker, range(clients)) for t in ts]
    return 1000 * statistics.median(seq), 1000 * statistics.median(conc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help=".onnx file (default: the default model, exported now)")
    parser.add_argument("--image", type=Path, help="image to upload (default: a synthetic 224 × 224 crack)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--deadline", type=float, default=600.0, help="stop the load test after this many seconds")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per call, for the service and the bare call")
    parser.add_argument("--workers", type=int, default=1, help="server processes (mieruka serve --workers)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_onnx(Path(tmp) / "model.onnx")
        if args.image:
            image = read_image(args.image)
            data, name = args.image.read_bytes(), args.image.name
        else:
            gray, _ = make_image("crack", np.random.default_rng(0), 224)
            image = np.repeat(gray[:, :, None], 3, axis=2)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "PNG")
            data, name = buf.getvalue(), "crack.png"

        runtime = OnnxModel(model, threads=args.threads)
        bare_seq, bare_conc = _bare(runtime, prepare([image], runtime.info), args.clients, args.requests)
        del runtime

        port = _free_port()
        cmd = [sys.executable, "-m", "mieruka", "serve", str(model), "--port", str(port)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.workers > 1:
            cmd += ["--workers", str(args.workers)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_until_up(port, server)
            body, ctype = _multipart(name, data)
            for _ in range(5):
                _request(port, body, ctype, None)
            single = [_request(port, body, ctype, None)[1] for _ in range(args.requests)]
            server0, client0 = _process_cpu(server.pid), _own_cpu()
            result = _load(port, body, ctype, args.clients, args.requests, args.deadline)
            server1, client1 = _process_cpu(server.pid), _own_cpu()
            n = max(1, int(result["requests"]))  # type: ignore[call-overload]
            if server0 is not None and server1 is not None:
                result["server_cpu_ms_per_request"] = round(1000 * (server1 - server0) / n, 2)
            result["client_cpu_ms_per_request"] = round(1000 * (client1 - client0) / n, 2)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()

    floor = 1.5 * bare_conc + 15
    out = {
        **result,
        "bare_p50_ms": round(bare_conc, 2),
        "bare_sequential_p50_ms": round(bare_seq, 2),
        "single_client_p50_ms": round(1000 * statistics.median(single), 2),
        "floor_ms": round(floor, 2),
        "meets_floor": result["p50_ms"] <= floor and result["errors"] == 0,
        "clients": args.clients,
        "threads": args.threads or "default",
        "workers": args.workers,
        "image": f"{name} {image.shape[1]}×{image.shape[0]}",
        "device": cpu_description(),
    }
    print(json.dumps(out))


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (the worker processes; Linux /proc, else None)."""
    stats: dict[int, tuple[int, float]] = {}  # pid → (parent, seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    if pid not in stats:
        return None
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for p, (parent, _) in stats.items():
            if parent in tree and p not in tree:
                tree.add(p)
                grew = True
    return sum(stats[p][1] for p in tree)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_until_up(port: int, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the service did not come up")


def _request(port: int, body: bytes, ctype: str, conn: http.client.HTTPConnection | None) -> tuple[bool, float]:
    """One upload; (answered 200 with an overlay, seconds)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t = time.perf_counter()
    conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    payload = resp.read()
    elapsed = time.perf_counter() - t
    if own:
        conn.close()
    return resp.status == 200 and b'"overlay_png"' in payload, elapsed


def _load(port: int, body: bytes, ctype: str, clients: int, requests: int, deadline_s: float) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(_: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(requests):
            if time.monotonic() > stop_at:
                break
            try:
                ok, elapsed = _request(port, body, ctype, conn)
            except (OSError, http.client.HTTPException):
                ok, elapsed = False, float("nan")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    done = len(latencies) + errors
    return {
        "requests": done,
        "errors": errors,
        "p50_ms": round(1000 * _percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(1000 * _percentile(latencies, 99), 2) if latencies else None,
        "rps": round(len(latencies) / wall, 1),
        "wall_s": round(wall, 1),
    }


if __name__ == "__main__":
    main()
