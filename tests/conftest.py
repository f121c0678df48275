"""Shared fixtures: a small synthetic data set and a tiny trained model, made once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mieruka.config import TrainConfig
from mieruka.data.synth import write_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MAGNETIC_TILE = SHARED / "data" / "magnetic-tile" / "manifest.csv"

torch.set_num_threads(2)

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
)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic data set: 6 classes × 8 images of 64 px, with masks."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, per_class=8, seed=1, size=64, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny random-init model trained 2 epochs on ``synth_dir``."""
    from mieruka.train import train

    run = tmp_path_factory.mktemp("run")
    train(synth_dir, run, TINY, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_run``'s model exported to ONNX (probabilities + Grad-CAM heatmap)."""
    from mieruka.export import export_onnx

    return export_onnx(tiny_run / "model.safetensors", tmp_path_factory.mktemp("onnx") / "model.onnx").path
