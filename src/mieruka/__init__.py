"""mieruka (見える化, "making visible"): explainable visual inspection.

Train a defect classifier on part images, evaluate it as inspection does (per class and OK/NG), explain every
prediction with a heatmap, and ship it. ``import mieruka`` stays cheap: the heavy modules (torch, timm) load only
when a submodule that needs them is imported. How the package is laid out: docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load", "train"]


def load(path: Any, **options: Any) -> Any:
    """``mieruka.load("model.safetensors" | ".onnx" | ".xml")``: an :class:`~mieruka.api.Inspector` with ``predict``,
    ``explain`` and ``audit`` (:mod:`mieruka.api`)."""
    from mieruka.api import load as _load

    return _load(path, **options)


def train(data: Any, *, out: Any, **options: Any) -> Any:
    """``mieruka.train(data, out=…, epochs=…)``: train as the command does (:func:`mieruka.api.train`)."""
    from mieruka.api import train as _train

    return _train(data, out=out, **options)
