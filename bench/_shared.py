"""Helpers shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mieruka.checkpoint import ModelInfo
from mieruka.config import TrainConfig
from mieruka.export import export_model
from mieruka.models import build_model, feature_layer, load_pretrained, normalization_for

CLASSES = ("blowhole", "break", "crack", "fray", "free", "uneven")


def default_model(size: int = 224, pretrained: bool = True) -> tuple[nn.Module, ModelInfo]:
    """The default architecture with its offline ImageNet backbone (random weights with ``pretrained=False``, for
    machines without the weights' package) and a 6-class head (speed does not depend on training, so no training is
    needed), and its description."""
    arch = TrainConfig().arch
    torch.manual_seed(0)
    model = build_model(arch, len(CLASSES))
    model = (load_pretrained(model, arch, "imagenet") if pretrained else model).eval()
    mean, std = normalization_for(arch)
    info = ModelInfo(
        arch=arch,
        classes=CLASSES,
        verdicts={c: "OK" if c == "free" else "NG" for c in CLASSES},
        image_size=size,
        mean=mean,
        std=std,
        target_layer=feature_layer(model),
    )
    return model, info


def default_onnx(out: Path, size: int = 224) -> Path:
    """:func:`default_model` exported by mieruka (probabilities + Grad-CAM heatmap of the predicted class)."""
    model, info = default_model(size)
    return export_model(model, info, out).path


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_description() -> str:
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} torch threads)"
