"""Batched inference over an :class:`~mieruka.data.store.ImageStore` (or pixels decoded on the GPU), and device
selection."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mieruka.data.store import ImageStore, PixelSource, normalize, require_readable
from mieruka.tta import tta_views

__all__ = [
    "DECODE_CHOICES",
    "FILE_CHUNK",
    "ClassifyOptions",
    "Passes",
    "batches",
    "classify_files",
    "cpu_chunked",
    "decode_device",
    "model_input",
    "predict_logits",
    "predict_probs",
    "predict_probs_and_features",
    "select_device",
    "tta_probabilities",
]

CPU_PIXELS_PER_PASS = 1 << 18
"""On a CPU, inference is bound by the caches, not by arithmetic: forward passes of at most this many pixels (4
images of 256 × 256, 16 of 128 × 128) ran 1.3–2.0 × as many images a second as passes of 32 or 64 (docs/
benchmarks-history.md#cpu-inference). Batches are still loaded and shown as ``batch_size`` images; only the forward
passes are split."""

R = TypeVar("R", torch.Tensor, tuple[torch.Tensor, torch.Tensor])


def cpu_chunked(fn: Callable[[torch.Tensor], R], device: torch.device) -> Callable[[torch.Tensor], R]:
    """``fn`` run on a CPU in slices of at most :data:`CPU_PIXELS_PER_PASS` pixels, the outputs concatenated."""
    if device.type != "cpu":
        return fn

    def run(x: torch.Tensor) -> R:
        n = max(1, CPU_PIXELS_PER_PASS // (x.shape[-2] * x.shape[-1]))
        if x.shape[0] <= n:
            return fn(x)
        outs = [fn(part) for part in x.split(n)]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))  # type: ignore[return-value]
        return torch.cat(outs)

    return run


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def batches(indices: Sequence[int], batch_size: int, *, desc: str, progress: bool) -> Iterator[list[int]]:
    """Consecutive runs of at most ``batch_size`` of ``indices``, with a progress bar: the one batch loop of every
    command that runs a model over many images."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: give at least 1")
    steps = range(0, len(indices), batch_size)
    for start in tqdm(steps, desc=desc, disable=not progress, leave=False, unit="batch"):
        yield [int(i) for i in indices[start : start + batch_size]]


def model_input(
    store: PixelSource, idx: Sequence[int], device: torch.device, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The normalized, channels-last float32 input (B, 3, S, S) of images ``idx`` of ``store`` on ``device``."""
    batch = store.get(idx).to(device, non_blocking=True)
    return normalize(batch, mean, std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    store: PixelSource,
    indices: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "predicting",
) -> np.ndarray:
    """Logits (N, K) for the images ``indices`` of ``store``, in that order. The model must be in eval mode."""
    device = next(model.parameters()).device
    forward = cpu_chunked(model, device)
    outs = []
    for idx in batches(indices, batch_size, desc=desc, progress=progress):
        x = model_input(store, idx, device, mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = forward(x)
        outs.append(logits.float().cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def _module_functions(
    module: nn.Module,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    """Probabilities of a batch, and (pooled features, probabilities) of a batch from one forward pass."""
    device = next(module.parameters()).device

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def probs_of(v: torch.Tensor) -> torch.Tensor:
        with autocast():
            return module(v.contiguous(memory_format=torch.channels_last)).float().softmax(1)

    def features_and_probs_of(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast():
            maps = module.forward_features(v.contiguous(memory_format=torch.channels_last))  # type: ignore[operator]
            pooled = module.forward_head(maps, pre_logits=True)  # type: ignore[operator]
            logits = module.get_classifier()(pooled)  # type: ignore[operator]
        return pooled.float(), logits.float().softmax(1)

    return cpu_chunked(probs_of, device), cpu_chunked(features_and_probs_of, device)


@torch.inference_mode()
def tta_probabilities(module: nn.Module, x: torch.Tensor, tta: str = "none") -> np.ndarray:
    """Class probabilities (B, K) of one normalized batch, averaged over the ``tta`` views: the forward pass
    :func:`predict_probs` runs on each batch of a store."""
    probs_of = _module_functions(module)[0]
    views = tta_views(x.to(next(module.parameters()).device), tta)
    return torch.stack([probs_of(v) for v in views]).mean(0).cpu().numpy()


@dataclass(frozen=True)
class Passes:
    """How :func:`predict_probs` runs a model over a store: the normalization, the test-time views (``tta``), images
    per batch and the progress bar (``desc`` its label)."""

    mean: Sequence[float]
    std: Sequence[float]
    tta: str = "none"
    batch_size: int = 64
    progress: bool = False
    desc: str = "predicting"


@torch.inference_mode()
def _predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    store: PixelSource,
    indices: Sequence[int],
    passes: Passes,
    with_features: bool,
) -> tuple[np.ndarray, torch.Tensor]:
    """Probabilities averaged over the ``tta`` views and, ``with_features``, the identity view's pooled features."""
    features_and_probs_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    if isinstance(model, nn.Module):
        device = next(model.parameters()).device
        probs_of, features_and_probs_of = _module_functions(model)
    else:
        device, probs_of = torch.device("cpu"), model
    if not with_features:
        features_and_probs_of = None
    outs, feats = [], []
    for idx in batches(indices, passes.batch_size, desc=passes.desc, progress=passes.progress):
        views = tta_views(model_input(store, idx, device, passes.mean, passes.std), passes.tta)
        if features_and_probs_of is None:
            probs = [probs_of(v) for v in views]
        else:
            pooled, first = features_and_probs_of(views[0])
            feats.append(pooled)
            probs = [first, *(probs_of(v) for v in views[1:])]
        outs.append(torch.stack(probs).mean(0))  # (B, K), averaged over the views
    if not outs:
        return np.zeros((0, 0), dtype=np.float32), torch.zeros(0, 0)
    # one copy to the host per call, not per batch: on a GPU each copy waits for the device
    features = F.normalize(torch.cat(feats), dim=1).cpu() if feats else torch.zeros(0, 0)
    return torch.cat(outs).cpu().numpy(), features


@torch.inference_mode()
def predict_probs(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    store: PixelSource,
    indices: Sequence[int],
    **passes: Any,
) -> np.ndarray:
    """Class probabilities (N, K), the softmax averaged over the ``tta`` views; ``passes``: :class:`Passes`' fields
    (``mean`` and ``std`` required).

    ``model`` is a PyTorch classifier in eval mode, or any callable from a normalized CPU batch to probabilities
    (an :class:`~mieruka.runtime.OnnxModel`): both get the same preprocessing and the same views.
    """
    return _predict(model, store, indices, Passes(**passes), False)[0]


@torch.inference_mode()
def predict_probs_and_features(
    model: nn.Module, store: PixelSource, indices: Sequence[int], **passes: Any
) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`predict_probs`, plus each image's unit-length pooled features (N, C) from the same forward pass.

    The features are the classifier's input (global average pooling of the last feature map) for the untransformed
    view, the ones :func:`mieruka.neighbors.pooled_features` gives; the model is a timm classifier in eval mode.
    """
    return _predict(model, store, indices, Passes(**passes), True)


FILE_CHUNK = 256
"""Images decoded and held at once by :func:`classify_files`: its memory does not grow with the number of files."""

DECODE_CHOICES = ("auto", "cpu", "device")
"""Where :func:`classify_files` decodes JPEGs: ``device`` on the model's device
(:mod:`mieruka.data.device_decode`), ``cpu`` with Pillow, ``auto`` on the device when the model is on a GPU."""


def _chunk_store(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    paths: list[Path],
    pre: Any,
    decode: str,
    encoded: dict[Path, bytes | None] | None = None,
) -> PixelSource:
    device = decode_device(model, decode)
    if device is not None:
        from mieruka.data.device_decode import DeviceStore

        return DeviceStore(paths, pre.image_size, device, bit_depth=pre.bit_depth, encoded=encoded)
    return ImageStore(paths, pre.image_size, progress=False, bit_depth=pre.bit_depth)


def decode_device(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], decode: str) -> torch.device | None:
    """The device JPEGs are decoded on for ``model`` under ``decode`` (:data:`DECODE_CHOICES`); None: Pillow."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"--decode {decode!r}: choose {', '.join(DECODE_CHOICES)}")
    device = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
    return device if decode == "device" or (decode == "auto" and device.type == "cuda") else None


@dataclass(frozen=True)
class ClassifyOptions:
    """How :func:`classify_files` runs: test-time views, images per forward pass, pooled features beside the
    probabilities, stop at the first unreadable file (``strict``), progress bar and its label, files decoded and
    held at once (``chunk``), where JPEGs are decoded (:data:`DECODE_CHOICES`)."""

    tta: str = "none"
    batch_size: int = 64
    with_features: bool = False
    strict: bool = False
    progress: bool = False
    desc: str = "predicting"
    chunk: int = FILE_CHUNK
    decode: str = "auto"


def classify_files(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[Path],
    preprocessing: Any,
    options: ClassifyOptions = ClassifyOptions(),
    encoded: dict[Path, bytes | None] | None = None,
) -> tuple[np.ndarray, torch.Tensor | None, dict[int, str]]:
    """Probabilities (N, K) of image files read ``chunk`` at a time, the pooled features with ``with_features``,
    and the files that could not be read (index → reason; their rows are NaN). ``strict`` raises at the first.

    ``preprocessing``: what the model reads (``image_size``, ``mean``, ``std``, ``bit_depth``: a
    :class:`~mieruka.checkpoint.ModelInfo`); ``encoded``: files already read for the device decoder
    (:func:`mieruka.data.device_decode.read_ahead`)."""
    o, pre = options, preprocessing
    probs: list[torch.Tensor | int] = []  # per chunk: its rows, or how many rows (all unreadable)
    feats: list[torch.Tensor | int] = []
    bad: dict[int, str] = {}
    passes = Passes(pre.mean, pre.std, o.tta, o.batch_size)
    bar = tqdm(total=len(paths), desc=o.desc, disable=not o.progress, leave=False, unit="img")
    for start in range(0, len(paths), o.chunk):
        part = list(paths[start : start + o.chunk])
        store = _chunk_store(model, part, pre, o.decode, encoded)
        if o.strict:
            require_readable(store.bad)
        reasons = {b.path: b.reason for b in store.bad}
        good = [i for i, p in enumerate(part) if p not in reasons]
        bad.update({start + i: reasons[p] for i, p in enumerate(part) if p in reasons})
        if not good:
            probs.append(len(part))
            feats.append(len(part))
        elif o.with_features and isinstance(model, nn.Module):
            p, f = _predict(model, store, good, passes, True)
            probs.append(_scatter(torch.from_numpy(p), good, len(part)))
            feats.append(_scatter(f, good, len(part)))
        else:
            p = _predict(model, store, good, passes, False)[0]
            probs.append(_scatter(torch.from_numpy(p), good, len(part)))
        bar.update(len(part))
    bar.close()
    features = _stack(feats) if o.with_features else None
    return _stack(probs).numpy(), features, bad


def _stack(parts: list[torch.Tensor | int]) -> torch.Tensor:
    """Chunks of rows, with all-unreadable chunks (their row count) as NaN rows of the others' width."""
    width = next((p.shape[1] for p in parts if isinstance(p, torch.Tensor)), 0)
    blocks = [p if isinstance(p, torch.Tensor) else torch.full((p, width), float("nan")) for p in parts]
    return torch.cat(blocks) if blocks else torch.zeros(0, width)


def _scatter(rows: torch.Tensor, positions: Sequence[int], n: int) -> torch.Tensor:
    """``rows`` placed at ``positions`` of an (n, …) tensor of NaN."""
    out = torch.full((n, *rows.shape[1:]), float("nan"), dtype=rows.dtype)
    out[list(positions)] = rows
    return out
