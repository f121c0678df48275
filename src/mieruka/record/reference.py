"""The reference ``monitor`` compares the line with, measured when training ends: the model's validation images run
as the service runs them (the graph of :class:`~mieruka.explain.graph.ExplainedModel`, the model's TTA, the gate
at its threshold), summarized by :mod:`mieruka.record.features`. Stored in the model's summary as
``drift_reference``; the service copies it into the record."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from mieruka.checkpoint import ModelInfo
from mieruka.data.images import read_image
from mieruka.errors import DataError
from mieruka.metrics import gate
from mieruka.model_file import TorchModel
from mieruka.record.features import heatmap_summary, image_features, reference_from_rows
from mieruka.runtime import prepare, run_with_tta

__all__ = ["MAX_IMAGES", "REFERENCE_KEY", "drift_reference"]

REFERENCE_KEY = "drift_reference"
MAX_IMAGES = 1000
"""A larger validation split is sampled (seeded) to this many images: the reference stays a few tens of kB."""


def drift_reference(
    model: nn.Module, info: ModelInfo, data: str | os.PathLike[str], batch_size: int = 32
) -> dict[str, Any] | None:
    """The reference of a trained ``model`` on the validation split of ``data`` (None: the split is empty)."""
    samples = list(info.load_dataset(data).split("val"))
    if len(samples) > MAX_IMAGES:
        keep = np.random.default_rng(0).choice(len(samples), MAX_IMAGES, replace=False)
        samples = [samples[i] for i in sorted(keep)]
    runner = TorchModel.of(model, info)  # as the service runs a checkpoint
    rows: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        images = []
        for s in samples[start : start + batch_size]:
            try:
                images.append(read_image(s.image, bit_depth=info.bit_depth))
            except DataError:
                continue  # an unreadable image is left out of the reference, as training left it out
        if not images:
            continue
        probs, heat = run_with_tta(runner, prepare(images, info), info.tta)
        rejected = gate(probs, info.ng_classes, info.decision_threshold)
        for i, image in enumerate(images):
            top = int(probs[i].argmax())
            row: dict[str, Any] = {
                "probability": float(probs[i, top]),
                "class": info.classes[top],
                "verdict": "NG" if rejected[i] else "OK",
                **image_features(image).as_dict(),
            }
            if heat is not None:
                row.update(heatmap_summary(heat[i]).as_dict())
            rows.append(row)
    if not rows:
        return None
    reference = reference_from_rows(rows)
    reference["features"] = {f: [round(v, 6) for v in values] for f, values in reference["features"].items()}
    reference["source"] = "validation split"
    return reference
