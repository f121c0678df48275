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


def explanation_figures(model_path: Path, data: str) -> dict[str, object]:
    """The validation explanation figures of a trained model, beside which its accuracy is judged: the stored
    method's AP, pointing game and energy inside on the validation defect regions (from the selection table that
    ``train --explain-method auto`` stores; scored here when the method was given), and what ``auto`` would choose."""
    from mieruka.audit.options import AuditOptions
    from mieruka.audit.selection import select_method
    from mieruka.checkpoint import read_info

    info = read_info(model_path)
    selection = info.method_selection if info.method_selection.get("candidates") else None
    if selection is None or all(c["method"] != info.explain_method for c in selection["candidates"]):
        selection = select_method(model_path, data, AuditOptions(progress=False))
    rows = {c["method"]: c for c in selection["candidates"]}
    row = rows.get(info.explain_method)
    out: dict[str, object] = {"explain_method": info.explain_method, "auto_method": selection["chosen"]}
    for key, name in (("average_precision", "ap"), ("pointing_hit", "pointing"), ("energy_inside", "energy_inside")):
        value = None if row is None or row[key] is None else round(float(row[key]), 4)
        out[f"val_{name}"] = value
    out["val_defect_images"] = selection["images"]
    return out
