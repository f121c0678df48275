"""Evaluate a model as inspection does: ``mieruka evaluate MODEL DATA --split test --out DIR``.

Writes ``metrics.json`` (per class and OK/NG gate), ``predictions.csv`` (one row per image) and
``confusion_matrix.png``. The NG threshold is chosen on the validation split for a target escape rate and then
applied, unchanged, to the evaluated split. With ``neighbors=K`` it also writes each image's K nearest training
images in the model's features (``neighbors.csv``) and a sheet of the misclassified ones (``neighbors.png``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mieruka import __version__
from mieruka._io import atomic_write, write_csv, write_json
from mieruka.checkpoint import ModelInfo
from mieruka.data.dataset import Dataset, Sample
from mieruka.data.images import read_image
from mieruka.data.store import ImageStore
from mieruka.errors import DataError, MierukaError
from mieruka.evaluation import (
    SCHEMA_VERSION,
    ClassFigures,
    EvaluationMetrics,
    GateFigures,
    NeighborFigures,
    Unreadable,
)
from mieruka.inference import ClassifyOptions, classify_files
from mieruka.metrics import (
    CONFIDENCE,
    choose_threshold,
    classification_metrics,
    clopper_pearson_upper,
    escape_bound,
    gate,
    gate_rates,
    ng_probability,
)
from mieruka.model_file import open_model
from mieruka.runtime import is_exported

__all__ = ["EvaluateOptions", "Evaluation", "evaluate", "plot_confusion"]

SHEET_ROWS = 40
"""At most this many misclassified images are drawn in ``neighbors.png`` (all are in ``neighbors.csv``)."""


@dataclass(frozen=True)
class Evaluation:
    """An evaluation's metrics and where its files are."""

    metrics: EvaluationMetrics
    out_dir: Path
    model_summary: dict[str, Any] = field(default_factory=dict)
    """The evaluated model's training summary (the MLflow run it came from, among others)."""


def _store(info: ModelInfo, samples: Sequence[Sample], progress: bool) -> ImageStore:
    return ImageStore(
        [s.image for s in samples], info.image_size, progress=progress, bit_depth=info.bit_depth
    ).require_readable()


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "Confusion matrix") -> Path:
    """Write a confusion-matrix heat map with counts (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mieruka.fonts import use_cjk_font

    use_cjk_font()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 2))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=35, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


@dataclass(frozen=True)
class EvaluateOptions:
    """How ``evaluate`` runs (the command's options; :func:`evaluate` takes them as keywords).

    Attributes:
        split: ``train``, ``val``, ``test`` or ``all``.
        max_escape: Escape-rate target used to choose the NG threshold on the validation split.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Images per forward pass.
        tta: Test-time augmentation (``none``, ``flip``, ``d4``); default: the model's, chosen on validation.
        neighbors: Also find each image's this many nearest training images (0: don't).
        strict: Stop at the first unreadable image (default: it is listed under ``unreadable`` in ``metrics.json``
            and as a row with an ``error`` in ``predictions.csv``, and the figures are those of the other images).
        progress: Show progress bars.
        provider: ONNX Runtime's execution provider for an ``.onnx`` model.
        layout: How the data set is laid out (``--layout``; default: as the model was trained).
    """

    split: str = "test"
    max_escape: float = 0.0
    device: str = "auto"
    batch_size: int = 64
    tta: str | None = None
    neighbors: int = 0
    strict: bool = False
    progress: bool = True
    provider: str = "auto"
    layout: str | None = None


def evaluate(
    model_path: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
) -> Evaluation:
    """Evaluate a trained model on one split of a data set.

    Args:
        model_path: The ``.safetensors`` model, or a file from ``mieruka export`` (``.onnx`` on ONNX Runtime's
            ``provider``, OpenVINO ``.xml``): the shipped artefact checked on the same images, with the same figures.
        data: The data set (folder tree or manifest); folder trees are split with the model's split seed.
        out: Output folder.
        options: :class:`EvaluateOptions`' fields (``split=…``, ``neighbors=…``…).

    The images are read a chunk at a time (:func:`mieruka.inference.classify_files`), so memory does not grow
    with the split.
    """
    o = EvaluateOptions(**options)
    if o.neighbors < 0:
        raise MierukaError("--neighbors must not be negative")
    model, info = _load(model_path, o)
    dataset: Dataset = info.with_layout(o.layout).load_dataset(data)
    split = o.split
    samples = dataset.split(split)
    if not samples:
        raise DataError(f"{data}: the {split} split is empty")
    tta = o.tta or info.tta
    how = ClassifyOptions(tta=tta, batch_size=o.batch_size, strict=o.strict, progress=o.progress)
    samples, probs, features, errors = _classify(
        model, info, samples, split, replace(how, with_features=o.neighbors > 0)
    )
    y_true = np.array([dataset.label_index(s) for s in samples])
    y_pred = probs.argmax(1)
    cls = classification_metrics(y_true, y_pred, info.classes)
    out_dir = Path(out)
    neighbors = None
    if o.neighbors and features is not None:
        found = _Found(samples, features, y_true, y_pred)
        neighbors = _neighbors(model, info, dataset, found, o, out_dir)
    metrics = EvaluationMetrics(
        schema_version=SCHEMA_VERSION,
        mieruka_version=__version__,
        model=str(model_path),
        data=str(data),
        split=split,
        classes=list(info.classes),
        verdicts=dict(info.verdicts),
        images=len(samples),
        unreadable=[Unreadable(image=str(s.image), reason=reason) for s, reason in errors],
        tta=tta,
        accuracy=cls["accuracy"],
        balanced_accuracy=cls["balanced_accuracy"],
        per_class={c: ClassFigures(**f) for c, f in cls["per_class"].items()},
        confusion_matrix=cls["confusion_matrix"],
        **_gate(model, info, dataset, samples, probs, o, how),
        neighbors=neighbors,
    )
    write_json(out_dir / "metrics.json", metrics.to_json())
    p_ng = ng_probability(probs, info.ng_classes)
    rejected = gate(probs, info.ng_classes, metrics.threshold)
    _write_predictions(out_dir / "predictions.csv", info, samples, probs, p_ng, rejected, errors)
    plot_confusion(
        np.array(metrics.confusion_matrix),
        info.classes,
        out_dir / "confusion_matrix.png",
        title=f"{split}: accuracy {metrics.accuracy:.3f}, balanced {metrics.balanced_accuracy:.3f}",
    )
    return Evaluation(metrics=metrics, out_dir=out_dir, model_summary=dict(info.summary))


def _load(model_path: str | os.PathLike[str], o: EvaluateOptions) -> tuple[Any, ModelInfo]:
    """A PyTorch model (channels-last) for a checkpoint, the runtime of an exported file."""
    if is_exported(model_path) and o.neighbors:
        raise MierukaError(
            f"--neighbors needs the model's pooled features, which an exported file ({Path(model_path).name}) "
            "does not output; evaluate the .safetensors for neighbours"
        )
    opened = open_model(model_path, o.device, provider=o.provider)
    return opened.runner, opened.info


def _classify(
    model: torch.nn.Module, info: ModelInfo, samples: Sequence[Sample], split: str, how: ClassifyOptions
) -> tuple[tuple[Sample, ...], np.ndarray, torch.Tensor | None, list[tuple[Sample, str]]]:
    """The readable samples, their probabilities and (``with_features``: the features neighbors are found by, from
    the same forward pass) pooled features, and the unreadable samples with their reasons."""
    probs, features, bad = classify_files(
        model, [s.image for s in samples], info, replace(how, desc=f"evaluating {split}")
    )
    if len(bad) == len(samples):
        raise DataError(f"none of the {len(samples)} images of the {split} split could be read")
    read = [i for i in range(len(samples)) if i not in bad]
    errors = [(samples[i], reason) for i, reason in sorted(bad.items())]
    return tuple(samples[i] for i in read), probs[read], None if features is None else features[read], errors


def _gate(
    model: torch.nn.Module,
    info: ModelInfo,
    dataset: Dataset,
    samples: Sequence[Sample],
    probs: np.ndarray,
    o: EvaluateOptions,
    how: ClassifyOptions,
) -> dict[str, Any]:
    """The OK/NG figures: by the predicted class's verdict alone, and by the gate (:func:`mieruka.metrics.gate`) at
    the NG threshold chosen on the validation split (on the evaluated split itself when that is the validation
    split, or when the data set has none), each with its Clopper–Pearson upper bound, and the threshold's conformal
    escape bound on the split it was chosen on."""
    ng = info.ng_classes
    is_ng = np.array([info.verdicts[s.label] == "NG" for s in samples])
    by_class = _with_bound(gate_rates(is_ng, np.isin(probs.argmax(1), ng)))
    split, max_escape, val = o.split, o.max_escape, dataset.split("val")
    if split != "val" and val:
        calibrating = replace(how, desc="calibrating on val")
        val_probs, _, val_bad = classify_files(model, [s.image for s in val], info, calibrating)
        kept = [i for i in range(len(val)) if i not in val_bad]
        val_probs = val_probs[kept]
        is_ng_val = np.array([info.verdicts[val[i].label] == "NG" for i in kept])
        threshold_source = "val"
    else:
        val_probs, is_ng_val, threshold_source = probs, is_ng, split
    predicted_ng_val = np.isin(val_probs.argmax(1), ng)
    threshold = choose_threshold(ng_probability(val_probs, ng), is_ng_val, max_escape, predicted_ng_val)
    val_escapes = int((is_ng_val & ~gate(val_probs, ng, threshold)).sum())
    return {
        "escape_rate": by_class.escape_rate,
        "overkill_rate": by_class.overkill_rate,
        "gate_by_class": by_class,
        "threshold": threshold,
        "threshold_chosen_on": threshold_source,
        "max_escape": max_escape,
        "escape_bound": escape_bound(val_escapes, int(is_ng_val.sum())),
        "confidence": CONFIDENCE,
        "gate_at_threshold": _with_bound(gate_rates(is_ng, gate(probs, ng, threshold))),
    }


def _with_bound(rates: dict[str, Any]) -> GateFigures:
    """Gate rates plus the one-sided upper confidence bound of the escape rate."""
    return GateFigures(**rates, escape_upper_bound=clopper_pearson_upper(rates["escapes"], rates["ng_parts"]))


def _write_predictions(
    path: Path,
    info: ModelInfo,
    samples: Sequence[Sample],
    probs: np.ndarray,
    p_ng: np.ndarray,
    rejected: np.ndarray,
    errors: Sequence[tuple[Sample, str]] = (),
) -> None:
    """``predictions.csv``: one row per image, with every class's probability; unreadable images last, with the
    reason in ``error``."""
    y_pred = probs.argmax(1)
    rows = [
        (
            str(s.image),
            s.label,
            info.classes[int(y_pred[i])],
            f"{probs[i, y_pred[i]]:.6f}",
            info.verdicts[s.label],
            info.verdicts[info.classes[int(y_pred[i])]],
            f"{p_ng[i]:.6f}",
            "NG" if rejected[i] else "OK",
            *(f"{p:.6f}" for p in probs[i]),
            "",
        )
        for i, s in enumerate(samples)
    ]
    blank = ("",) * (6 + len(info.classes))
    rows += [(str(s.image), s.label, *blank, reason) for s, reason in errors]
    header = (
        "image",
        "true",
        "predicted",
        "probability",
        "true_verdict",
        "predicted_verdict",
        "ng_probability",
        "verdict_at_threshold",
        *(f"p[{c}]" for c in info.classes),
        "error",
    )
    write_csv(path, header, rows)


@dataclass(frozen=True)
class _Found:
    """The evaluated images: their samples, unit-length pooled features, true and predicted class indices."""

    samples: Sequence[Sample]
    features: torch.Tensor
    y_true: np.ndarray
    y_pred: np.ndarray


def _neighbors(
    model: torch.nn.Module, info: ModelInfo, dataset: Dataset, found: _Found, o: EvaluateOptions, out_dir: Path
) -> NeighborFigures:
    """Write ``neighbors.csv`` (every image's k nearest training images) and ``neighbors.png`` (the errors')."""
    from mieruka.neighbors import nearest, neighbor_sheet, pooled_features

    samples, queries, y_true, y_pred = found.samples, found.features, found.y_true, found.y_pred
    k, batch_size, progress = o.neighbors, o.batch_size, o.progress

    train = dataset.split("train")
    if not train:
        raise DataError("--neighbors: the data set has no training split to compare with")
    train_store = _store(info, train, progress)
    kw: dict[str, Any] = {"mean": info.mean, "std": info.std, "batch_size": batch_size, "progress": progress}
    references = pooled_features(model, train_store, list(range(len(train))), desc="features of train", **kw)
    position = {s.image: j for j, s in enumerate(train)}
    # an image of the training split itself is not its own neighbor
    same = [(i, position[s.image]) for i, s in enumerate(samples) if s.image in position]
    sims, idx = nearest(queries, references, k, exclude=same)
    rows = [
        (
            str(s.image),
            s.label,
            info.classes[int(y_pred[i])],
            r + 1,
            str(train[j].image),
            train[j].label,
            f"{sims[i, r]:.4f}",
        )
        for i, s in enumerate(samples)
        for r, j in enumerate(idx[i])
    ]
    header = ("image", "true", "predicted", "rank", "neighbor", "neighbor_label", "similarity")
    write_csv(out_dir / "neighbors.csv", header, rows)
    errors = [int(i) for i in np.nonzero(y_true != y_pred)[0]]
    like = [i for i in errors if train[int(idx[i, 0])].label == info.classes[int(y_pred[i])]]
    if errors:
        sheet = neighbor_sheet(
            [
                (
                    read_image(samples[i].image, bit_depth=info.bit_depth),
                    f"{samples[i].image.name}\ntrue: {samples[i].label} / predicted: {info.classes[int(y_pred[i])]}",
                    [
                        (
                            read_image(train[int(j)].image, bit_depth=info.bit_depth),
                            f"{train[int(j)].image.name}\ntrain: {train[int(j)].label}, cos {sims[i, r]:.3f}",
                        )
                        for r, j in enumerate(idx[i])
                    ],
                )
                for i in errors[:SHEET_ROWS]
            ]
        )
        atomic_write(out_dir / "neighbors.png", lambda p: sheet.save(p, format="PNG"))
    else:
        (out_dir / "neighbors.png").unlink(missing_ok=True)  # no sheet of an earlier run's errors left behind
    return NeighborFigures(
        k=int(idx.shape[1]),
        reference_split="train",
        errors=len(errors),
        errors_nearest_labelled_as_predicted=len(like),
        images=[str(samples[i].image) for i in like],
    )
