"""Classify images with a trained model: ``mieruka predict MODEL IMAGE_OR_DIR... --out preds.csv``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mieruka._io import write_csv
from mieruka.checkpoint import load_checkpoint
from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sources.folder import MASKS_DIR
from mieruka.data.store import ImageStore
from mieruka.errors import DataError
from mieruka.inference import predict_probs, select_device
from mieruka.metrics import gate, ng_probability
from mieruka.runtime import OnnxModel

__all__ = ["Prediction", "collect_images", "predict"]


@dataclass(frozen=True)
class Prediction:
    """One image's result."""

    image: Path
    label: str
    probability: float
    verdict: str
    ng_probability: float
    probabilities: tuple[float, ...]
    threshold: float


def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly, plus every image below named folders (sorted; hidden files and the files of a
    ``masks/`` folder, where a data set keeps its defect masks, are skipped)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") or part == MASKS_DIR for part in f.relative_to(p).parts[:-1])
                and not f.name.startswith(".")
            )
            if not found:
                raise DataError(f"{p}: the folder holds no images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not paths:
        raise DataError("no images given")
    return paths


def predict(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 64,
    tta: str | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Class, probability and verdict of every image (``tta`` default: the model's, chosen on validation).

    ``model_path`` is a ``.safetensors`` checkpoint (PyTorch) or a ``.onnx`` file from ``mieruka export`` (ONNX
    Runtime on the CPU; ``device`` is then ignored). Both get the same preprocessing.

    The verdict is NG when the NG probability reaches ``threshold`` (default: the threshold chosen on the validation
    split at training time, :attr:`~mieruka.checkpoint.ModelInfo.decision_threshold`).
    """
    model: nn.Module | OnnxModel
    if Path(model_path).suffix.lower() == ".onnx":
        model = OnnxModel(model_path)
        info = model.info
    else:
        model, info, _ = load_checkpoint(model_path, select_device(device))
        model = model.to(memory_format=torch.channels_last)
    paths = collect_images(inputs)
    store = ImageStore(paths, info.image_size, progress=progress, bit_depth=info.bit_depth).require_readable()
    probs = predict_probs(
        model,
        store,
        list(range(len(paths))),
        mean=info.mean,
        std=info.std,
        tta=tta or info.tta,
        batch_size=batch_size,
        progress=progress,
    )
    p_ng = ng_probability(probs, info.ng_classes)
    t = threshold if threshold is not None else info.decision_threshold
    top = probs.argmax(1)
    rejected = gate(probs, info.ng_classes, t)
    results = [
        Prediction(
            image=p,
            label=info.classes[int(top[i])],
            probability=float(probs[i, top[i]]),
            verdict="NG" if rejected[i] else "OK",
            ng_probability=float(p_ng[i]),
            probabilities=tuple(float(v) for v in probs[i]),
            threshold=t,
        )
        for i, p in enumerate(paths)
    ]
    if out is not None:
        header = ("image", "class", "probability", "verdict", "ng_probability", *(f"p[{c}]" for c in info.classes))
        rows = [
            (
                str(r.image),
                r.label,
                f"{r.probability:.6f}",
                r.verdict,
                f"{r.ng_probability:.6f}",
                *(f"{v:.6f}" for v in r.probabilities),
            )
            for r in results
        ]
        write_csv(out, header, rows)
    return results
