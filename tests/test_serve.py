from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM, browser_page, free_port, served
from fastapi.testclient import TestClient
from PIL import Image

from mieruka.checkpoint import load_checkpoint, save_checkpoint
from mieruka.model_file import TorchModel
from mieruka.predict import predict
from mieruka.runtime import OnnxModel
from mieruka.serve import create_app, is_loopback


@pytest.fixture(scope="module")
def onnx_client(tiny_onnx: Path) -> TestClient:
    return TestClient(create_app(OnnxModel(tiny_onnx), max_images=4))


def _png(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/png")


def _crack_images(synth_dir: Path) -> list[Path]:
    return sorted((synth_dir / "crack").glob("*.png"))


def test_health_model_docs_and_page(onnx_client: TestClient) -> None:
    assert onnx_client.get("/healthz").json() == {"status": "ok"}
    m = onnx_client.get("/v1/model").json()
    assert m["classes"] == ["blowhole", "crack", "good", "normal (dirt)", "normal (scratch)", "scratch"]
    assert m["verdicts"]["crack"] == "NG" and m["verdicts"]["good"] == "OK"
    assert m["method"] == "gradcam" and m["backend"] == "onnxruntime" and m["heatmap"] is True
    assert "/v1/predict" in onnx_client.get("/openapi.json").json()["paths"]
    for docs in ("/docs", "/redoc"):  # bundled with the package: an offline line PC shows them too
        html = onnx_client.get(docs)
        assert html.status_code == 200 and "<script" in html.text
        assert not re.search(r"https?://|//[a-z]", html.text.replace("http://testserver", "")), docs
        for asset in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text):
            if not asset.startswith("data:"):
                assert onnx_client.get(asset).status_code == 200, asset
    page = onnx_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # offline: nothing is loaded from another host
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert 'url("static/cjk-font.ttf")' in page.text
    font = onnx_client.get("/static/cjk-font.ttf")
    assert font.status_code == 200 and font.content[:4] in (b"\x00\x01\x00\x00", b"OTTO", b"true")


def test_predict_matches_the_predict_command(onnx_client: TestClient, tiny_onnx: Path, synth_dir: Path) -> None:
    paths = _crack_images(synth_dir)[:3]
    r = onnx_client.post("/v1/predict", files=[("files", _png(p)) for p in paths])
    assert r.status_code == 200
    body = r.json()
    assert body["method"] == "gradcam" and len(body["results"]) == 3
    expected = predict(tiny_onnx, paths, progress=False)
    for res, exp, path in zip(body["results"], expected, paths, strict=True):
        assert res["filename"] == path.name
        assert res["class"] == exp.label and res["verdict"] == exp.verdict
        assert np.allclose(list(res["probabilities"].values()), list(exp.probabilities.values()), atol=1e-6)
        assert res["probability"] == pytest.approx(max(exp.probabilities.values()), abs=1e-6)
        assert res["verdict"] == ("NG" if res["ng_probability"] >= res["threshold"] else "OK")
        png = Image.open(io.BytesIO(base64.b64decode(res["overlay_png"])))
        assert png.format == "PNG" and png.size == (res["width"], res["height"]) == (64, 64)


def test_overlay_is_the_jet_heatmap_blended_on_the_image(tiny_run: Path, synth_dir: Path) -> None:
    """Where the map is 1 the overlay leans red, where it is 0 blue (jet), blended half and half."""
    runtime = TorchModel(tiny_run / "model.safetensors")
    client = TestClient(create_app(runtime))
    gray = Image.new("RGB", (96, 48), (128, 128, 128))
    buf = io.BytesIO()
    gray.save(buf, "PNG")
    res = client.post("/v1/predict", files=[("files", ("gray.png", buf.getvalue(), "image/png"))]).json()["results"][0]
    over = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["overlay_png"]))).convert("RGB")).astype(int)
    assert over.shape == (48, 96, 3)
    from mieruka.runtime import prepare

    _, heat = runtime.run(prepare([np.asarray(gray)], runtime.info))
    assert heat is not None
    hot = np.unravel_index(heat[0].argmax(), heat[0].shape)
    cold = np.unravel_index(heat[0].argmin(), heat[0].shape)
    scale = np.array([48, 96]) / heat[0].shape[0]
    hy, hx = (np.array(hot) * scale).astype(int)
    cy, cx = (np.array(cold) * scale).astype(int)
    assert over[hy, hx, 0] > over[hy, hx, 2]  # red over blue where the evidence is
    assert over[cy, cx, 2] > over[cy, cx, 0]  # blue over red where there is none


def test_overlay_can_be_left_out_and_threshold_set(onnx_client: TestClient, synth_dir: Path) -> None:
    path = _crack_images(synth_dir)[0]
    r = onnx_client.post("/v1/predict", params={"overlay": "false", "threshold": 1.0}, files=[("files", _png(path))])
    res = r.json()["results"][0]
    assert "overlay_png" not in res and res["threshold"] == 1.0 and res["verdict"] == "OK"
    r = onnx_client.post("/v1/predict", params={"threshold": 0.0}, files=[("files", _png(path))])
    assert r.json()["results"][0]["verdict"] == "NG"
    assert onnx_client.post("/v1/predict", params={"threshold": 2}, files=[("files", _png(path))]).status_code == 422


def test_heatmap_and_preview_for_the_page(tiny_run: Path, synth_dir: Path) -> None:
    """``heatmap=1`` gives the jet heatmap alone, ``preview=1`` the input as PNG (for TIFF, which browsers cannot
    show); blended half and half they are the overlay."""
    client = TestClient(create_app(TorchModel(tiny_run / "model.safetensors")))
    path = _crack_images(synth_dir)[0]
    buf = io.BytesIO()
    Image.open(path).save(buf, "TIFF")
    files = [("files", ("part.tif", buf.getvalue(), "image/tiff"))]
    res = client.post("/v1/predict", params={"heatmap": 1, "preview": 1}, files=files).json()["results"][0]

    def pic(key: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(res[key]))).convert("RGB")).astype(int)

    assert np.array_equal(pic("input_png"), np.asarray(Image.open(path).convert("RGB")))
    assert np.abs((pic("input_png") + pic("heatmap_png")) / 2 - pic("overlay_png")).max() <= 1
    plain = client.post("/v1/predict", files=[("files", _png(path))]).json()["results"][0]
    assert "input_png" not in plain and "heatmap_png" not in plain


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 Mpx in about 10 kB
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "payload", "status", "message"),
    [
        ("notes.txt", b"this is not an image", 415, "notes.txt: not an image"),
        ("empty.png", b"", 415, "empty.png: the file is empty"),
        ("half.png", None, 422, "half.png: the image cannot be decoded"),
        ("bomb.png", "bomb", 413, "bomb.png: 9000×9000 pixels exceeds the limit"),
    ],
)
def test_bad_uploads_get_4xx_with_a_message(
    onnx_client: TestClient, synth_dir: Path, name: str, payload: bytes | str | None, status: int, message: str
) -> None:
    if payload is None:
        data = _crack_images(synth_dir)[0].read_bytes()
        payload = data[: len(data) // 2]
    elif payload == "bomb":
        payload = _bomb()
    good = _png(_crack_images(synth_dir)[0])
    r = onnx_client.post("/v1/predict", files=[("files", good), ("files", (name, payload, "image/png"))])
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_limits_on_size_and_count(tiny_onnx: Path, synth_dir: Path) -> None:
    client = TestClient(create_app(OnnxModel(tiny_onnx), max_upload_mb=0.01, max_images=2))
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(big, "PNG")
    assert len(big.getvalue()) > 0.01 * 1024 * 1024
    r = client.post("/v1/predict", files=[("files", ("big.png", big.getvalue(), "image/png"))])
    assert r.status_code == 413
    small = _png(_crack_images(synth_dir)[0])
    r = client.post("/v1/predict", files=[("files", small)] * 3)
    assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
    assert client.post("/v1/predict").status_code == 422  # no file at all
    assert client.post("/v1/predict", files=[("files", small)] * 2).status_code == 200


def test_api_key(tiny_onnx: Path, synth_dir: Path) -> None:
    client = TestClient(create_app(OnnxModel(tiny_onnx), api_key="s3cret"))
    small = _png(_crack_images(synth_dir)[0])
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/v1/model").status_code == 401
    assert client.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/predict", files=[("files", small)]).status_code == 401
    assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).json()["auth"] is True
    assert client.post("/v1/predict", files=[("files", small)], headers={"X-API-Key": "s3cret"}).status_code == 200
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_both_backends_answer_alike(tiny_run: Path, tiny_onnx: Path, synth_dir: Path) -> None:
    paths = _crack_images(synth_dir)[:2]
    files = [("files", _png(p)) for p in paths]
    a = TestClient(create_app(OnnxModel(tiny_onnx))).post("/v1/predict", files=files).json()["results"]
    b = TestClient(create_app(TorchModel(tiny_run / "model.safetensors"))).post("/v1/predict", files=files).json()
    for x, y in zip(a, b["results"], strict=True):
        assert x["class"] == y["class"] and x["verdict"] == y["verdict"]
        assert np.allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-4)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_concurrent_requests_get_their_own_answers(
    backend: str, tiny_run: Path, tiny_onnx: Path, synth_dir: Path
) -> None:
    runtime = OnnxModel(tiny_onnx) if backend == "onnx" else TorchModel(tiny_run / "model.safetensors")
    client = TestClient(create_app(runtime))
    paths = sorted(synth_dir.glob("*/*.png"))[::4][:12]

    def ask(path: Path) -> dict:
        r = client.post("/v1/predict", files=[("files", _png(path))])
        assert r.status_code == 200
        return r.json()["results"][0]

    alone = [ask(p) for p in paths]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, paths * 3))
    for i, res in enumerate(together):
        ref = alone[i % len(paths)]
        assert res["filename"] == ref["filename"] and res["class"] == ref["class"]
        assert np.allclose(list(res["probabilities"].values()), list(ref["probabilities"].values()), atol=1e-6)
        assert res["overlay_png"] == ref["overlay_png"]


# --- a real browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_ja_service(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny model with Japanese class names, served by uvicorn on a free loopback port."""
    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    names = ("欠陥A", "欠陥B", "良品", "正常(汚れ)", "正常(キズ)", "欠陥C")
    ja = replace(info, classes=names, verdicts=dict(zip(names, ("NG", "NG", "OK", "OK", "OK", "NG"), strict=True)))
    path = save_checkpoint(tmp_path_factory.mktemp("ja") / "ja.safetensors", model, ja)
    with served(create_app(TorchModel(path))) as url:
        yield url


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make test installs it)")
def test_web_page_in_a_real_browser(live_ja_service: str, synth_dir: Path, tmp_path: Path) -> None:
    image = _crack_images(synth_dir)[0]
    with browser_page("en-US") as (page, errors):
        page.goto(live_ja_service)
        page.wait_for_function("document.getElementById('model').textContent.includes('欠陥A')")
        page.set_input_files("#files", str(image))
        verdict = page.locator(".result .verdict").first
        verdict.wait_for(timeout=20_000)
        assert verdict.inner_text() in ("OK", "NG")
        color = verdict.evaluate("e => getComputedStyle(e).color")
        assert color == ("rgb(207, 34, 46)" if verdict.inner_text() == "NG" else "rgb(26, 127, 55)")
        # input and overlay side by side, both decoded by the browser
        sizes = page.eval_on_selector_all(".result figure img", "els => els.map(e => [e.naturalWidth, e.complete])")
        assert sizes == [[64, True]] * 3  # the input, and the overlay: the input under the heatmap
        boxes = [page.locator(f".result figure.{c} img").first.bounding_box() for c in ("input", "overlay")]
        assert boxes[0] and boxes[1] and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1
        names = page.eval_on_selector_all(".result .bars td.name", "els => els.map(e => e.textContent)")
        assert sorted(names) == sorted(["欠陥A", "欠陥B", "良品", "正常(汚れ)", "正常(キズ)", "欠陥C"])
        # Japanese glyphs render with a real font: a CJK name is wider than the same number of spaces would be
        width = page.eval_on_selector(".result .bars td.name", "e => e.getBoundingClientRect().width")
        assert width > 20
        assert page.inner_text(".result figure.overlay figcaption").startswith("heatmap")
        assert re.fullmatch(r"NG probability 0\.\d{3} \(NG from 0\.\d{3}\)", page.inner_text(".result .ngline"))
        page.click("#lang")
        assert page.inner_text(".result figure.input figcaption") == "入力画像"
        assert page.inner_text(".result .predicted").startswith("予測: ")
        assert page.evaluate("document.documentElement.lang") == "ja"
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        assert not errors, errors


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make test installs it)")
def test_page_splits_uploads_previews_tiff_rejudges_and_keeps_history(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """Three images to a service that takes two per request: two requests, three results; the TIFF shows (the
    server's preview); the threshold slider re-judges without a request; opacity, zoom; the history survives a
    reload and downloads as CSV."""
    folder = tmp_path / "parts"
    folder.mkdir()
    images = _crack_images(synth_dir)[:2]
    for path in images:
        (folder / path.name).write_bytes(path.read_bytes())
    Image.open(images[0]).save(folder / "camera.tif")
    (folder / "notes.txt").write_text("not an image")
    requests: list[str] = []
    app = create_app(TorchModel(tiny_run / "model.safetensors"), max_images=2)
    with served(app) as url, browser_page("en-US") as (page, errors):
        page.on("request", lambda r: requests.append(r.url) if "/v1/predict" in r.url else None)
        page.goto(url)
        page.wait_for_function("document.getElementById('threshold-value').textContent !== ''")
        model_threshold = float(page.inner_text("#threshold-value"))
        page.set_input_files("#folder", str(folder))  # the folder button: every file under it
        page.wait_for_selector(".batchhead")
        assert page.locator(".result").count() == 3 and len(requests) == 2
        assert "skipped" in page.inner_text("#status")  # notes.txt
        tif = page.locator(".result", has_text="camera.tif").locator("figure.input img")
        assert tif.evaluate("e => [e.naturalWidth, e.src.startsWith('data:image/png')]") == [64, True]

        def verdicts() -> list[str]:
            return page.eval_on_selector_all(".result .verdict", "els => els.map(e => e.textContent)")

        page.eval_on_selector("#threshold", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
        assert verdicts() == ["NG"] * 3 and len(requests) == 2  # re-judged in the page, no new request
        assert page.inner_text(".batchhead") == "3 images: 0 OK, 3 NG"
        page.click("#threshold-reset")
        assert float(page.inner_text("#threshold-value")) == model_threshold
        page.eval_on_selector("#opacity", "e => { e.value = 0.2; e.dispatchEvent(new Event('input')); }")
        assert page.locator("img.heat").first.evaluate("e => getComputedStyle(e).opacity") == "0.2"
        page.locator(".result figure.overlay").first.click()
        assert page.locator("#zoom.open img.heat").count() == 1
        page.keyboard.press("Escape")
        page.reload()
        page.wait_for_function("document.querySelectorAll('#history-rows tr').length === 3")
        with page.expect_download() as download:
            page.click("#history-csv")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "time,file,class,probability,ng_probability,threshold,verdict" and len(lines) == 4
        assert sorted(line.split(",")[1] for line in lines[1:]) == sorted(["parts/camera.tif"] + [
            f"parts/{p.name}" for p in images
        ])  # fmt: skip
        page.click("#history-clear")
        assert page.locator("#history-rows tr").count() == 0
        assert not errors, errors


def test_serve_command_warns_when_open_without_a_key(tiny_onnx: Path, monkeypatch, capsys) -> None:
    """`mieruka serve` loads the model and hands the app to uvicorn; beyond localhost without a key it warns."""
    import torch
    import uvicorn

    from mieruka.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: calls.append((app, host, port)))
    threads = torch.get_num_threads()
    try:
        assert main(["serve", str(tiny_onnx), "--host", "0.0.0.0", "--port", "8123"]) == 0
        assert torch.get_num_threads() == 1  # ONNX Runtime does the heavy work
    finally:
        torch.set_num_threads(threads)
    app, host, port = calls[0]
    assert (host, port) == ("0.0.0.0", 8123)
    assert TestClient(app).get("/v1/model").json()["backend"] == "onnxruntime"
    out = capsys.readouterr()
    assert "without an API key" in out.err and "heatmap by gradcam" in out.out
    monkeypatch.setenv("MIERUKA_API_KEY", "k")
    try:
        assert main(["serve", str(tiny_onnx), "--host", "0.0.0.0"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "without an API key" not in capsys.readouterr().err
    assert TestClient(calls[1][0]).get("/v1/model").status_code == 401


def test_serve_with_workers_hands_uvicorn_a_factory(tiny_onnx: Path, monkeypatch, capsys) -> None:
    """With --workers N each uvicorn worker builds its own app from the settings `serve` leaves in the environment."""
    import os

    import torch
    import uvicorn

    from mieruka.cli import main
    from mieruka.serve import _SETTINGS_ENV, app_from_environment

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    monkeypatch.setenv(_SETTINGS_ENV, "")  # restored after the test; serve overwrites it
    threads = torch.get_num_threads()
    try:
        assert main(["serve", str(tiny_onnx), "--workers", "2", "--api-key", "k", "--port", "8124"]) == 0
    finally:
        torch.set_num_threads(threads)
    target, kw = calls[0]
    assert target == "mieruka.serve:app_from_environment"
    assert kw["factory"] is True and kw["workers"] == 2 and kw["port"] == 8124
    assert "2 worker processes" in capsys.readouterr().out
    try:
        client = TestClient(app_from_environment())  # what one worker runs
    finally:
        torch.set_num_threads(threads)
    assert client.get("/v1/model").status_code == 401  # the key reached the worker
    assert client.get("/v1/model", headers={"X-API-Key": "k"}).json()["backend"] == "onnxruntime"
    assert '"threads": ' + str(max(1, (os.cpu_count() or 1) // 2)) in os.environ[_SETTINGS_ENV]
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tiny_onnx), "--workers", "0"])
    assert exit_.value.code == 2 and "argument --workers: 0 is less than 1" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_with_two_worker_processes_answers(tiny_onnx: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The real thing: `mieruka serve --workers 2 --record …` as its own process, one upload, a full answer; then
    concurrent uploads, every one recorded once in the one database both processes write."""
    import http.client
    import json
    import subprocess
    import sys

    port = free_port()
    url = f"sqlite:///{tmp_path / 'records.db'}"
    command = [sys.executable, "-m", "mieruka", "serve", str(tiny_onnx), "--port", str(port), "--workers", "2",
               "--record", url, "--keep", "all"]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else "server exited"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.3)
        image = _crack_images(synth_dir)[0]
        boundary = "mierukatest"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{image.name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + image.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST", "/v1/predict", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        response = conn.getresponse()
        answer = response.read()
        assert response.status == 200, answer
        result = json.loads(answer)["results"][0]
        assert result["filename"] == image.name and result["verdict"] in ("OK", "NG")
        overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_png"])))
        assert overlay.size == Image.open(image).size

        def send(i: int) -> bool:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Part-Id": f"W-{i}"}
            c.request("POST", "/v1/predict", body=body, headers=headers)
            return bool(json.loads(c.getresponse().read())["recorded"])

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(send, range(8)))
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    import csv

    from mieruka.record.query import Selection, export

    assert export(url, Selection(), tmp_path / "all.csv") == 9
    rows = list(csv.DictReader((tmp_path / "all.csv").open(encoding="utf-8")))
    assert sorted(r["part_id"] for r in rows if r["part_id"]) == [f"W-{i}" for i in range(8)]
    assert len(rows) == 9 and len({r["model_id"] for r in rows}) == 1


class _Broken:
    """A runtime that loads but cannot answer (e.g. a model whose input does not fit its graph)."""

    backend = "test"
    provider = "test"
    method = None

    def __init__(self, info) -> None:
        self.info = info

    def run(self, x: np.ndarray):
        raise RuntimeError("the graph expects 3 channels, got 4")


def test_healthz_reflects_a_model_that_cannot_answer(tiny_run: Path, synth_dir: Path) -> None:
    _, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    client = TestClient(create_app(_Broken(info)))
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "error" and "expects 3 channels" in r.json()["detail"]
    r = client.post("/v1/predict", files=[("files", _png(_crack_images(synth_dir)[0]))])
    assert r.status_code == 503 and "cannot answer" in r.json()["detail"]


def test_a_declared_oversized_body_gets_json_413(onnx_client: TestClient) -> None:
    r = onnx_client.post(
        "/v1/predict",
        content=b"x" * 10,
        headers={"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(100 * 1024 * 1024)},
    )
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    assert "larger than the limit of 32 MiB" in r.json()["detail"]


def test_serve_options_are_checked_by_name(tiny_onnx: Path) -> None:
    from mieruka.errors import MierukaError
    from mieruka.serve import serve

    for kwargs, needle in (
        ({"port": 70000}, "--port 70000"),
        ({"max_upload_mb": -1}, "--max-upload-mb -1"),
        ({"max_images": 0}, "--max-images 0"),
        ({"threads": 0}, "--threads 0"),
    ):
        with pytest.raises(MierukaError, match=needle):
            serve(tiny_onnx, **kwargs)
