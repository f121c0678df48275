"""Shared fixtures: a small synthetic data set and a tiny trained model, made once per test session."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mieruka.config import TrainConfig
from mieruka.data.synth import write_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MAGNETIC_TILE = SHARED / "data" / "magnetic-tile" / "manifest.csv"

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
"""Test processes running side by side (``make test`` runs one per core with pytest-xdist)."""
THREADS = max(1, min(2, (os.cpu_count() or 2) // WORKERS))
# One worker per core: each (and the commands it starts) computes on its own core. Threads that outnumber the cores
# make PyTorch's thread pool spin against itself: a 3 s test took 80 s.
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's Chromium for the browser tests (``make test`` installs it); None skips them."""

TINY = TrainConfig(
    pretrained="none",
    image_size=64,
    epochs=2,
    batch_size=8,
    patience=0,
    freeze_stages=0,
    tta="auto",
    explain_method="gradcam",
    guide="none",
)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` for the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder ``make`` fills once per test run: in this process, or under pytest-xdist by the first worker that
    asks for it while the others wait on a lock, then read it as it is (no test writes into these folders)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        path = factory.mktemp(name)
        make(path)
        return path
    from filelock import FileLock

    path = factory.getbasetemp().parent / name  # shared by the workers of this run
    made = path.with_name(f"{name}.made")  # beside the folder: a data set's folder holds its own files only
    with FileLock(f"{path}.lock"):
        if not made.is_file():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            make(path)
            made.touch()
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic data set: 6 classes × 8 images of 64 px, with masks."""
    return made_once(
        tmp_path_factory, "synth", lambda root: write_dataset(root, per_class=8, seed=1, size=64, progress=False)
    )


def _train_tiny(data: Path, run: Path) -> None:
    from mieruka.train import train

    with torch_threads(2):  # the same model whatever the number of workers (float sums depend on the threads)
        train(data, run, TINY, progress=False)


@pytest.fixture(scope="session")
def tiny_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny random-init model trained 2 epochs on ``synth_dir``."""
    return made_once(tmp_path_factory, "run", lambda run: _train_tiny(synth_dir, run))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_run``'s model exported to ONNX (probabilities + Grad-CAM heatmap)."""
    from mieruka.export import export_onnx

    folder = made_once(
        tmp_path_factory, "onnx", lambda out: export_onnx(tiny_run / "model.safetensors", out / "model.onnx")
    )
    return folder / "model.onnx"


@pytest.fixture(scope="session")
def tiny_openvino(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_run``'s model exported by ``mieruka export --format openvino`` (``model.xml`` + ``model.bin``)."""
    pytest.importorskip("openvino")
    from mieruka.cli import main

    def export(folder: Path) -> None:
        assert main(["export", str(tiny_run / "model.safetensors"), "--format", "openvino",
                     "--out", str(folder / "model.xml")]) == 0  # fmt: skip

    return made_once(tmp_path_factory, "openvino", export) / "model.xml"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL, stops it on exit."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def browser_page(locale: str | None = None) -> Iterator[tuple[Any, list[str]]]:
    """A page of a headless Chromium (Debian's, :data:`CHROMIUM`) and the list its script errors go to; the browser
    is closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale=locale) if locale else browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()
