"""What the service records of one answered image: the decision, the model that made it, and a summary of its
image and heatmap (:mod:`mieruka.record.features`); with the files to keep (the upload as sent, the overlay)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mieruka.explain.render import picture_png
from mieruka.record.features import heatmap_summaries, image_features, in_stacks
from mieruka.record.store import Kept, Recorder

__all__ = ["PART_ID_HEADER", "LineRecord", "model_id"]

OVERLAY_SIDE = 512
"""A kept overlay is drawn at most this many pixels a side (the service's own answer size)."""

FILENAME_MAX = 400
"""The longest file name the record keeps (longer ones are cut: the schema's ``filename`` column)."""

PART_ID_HEADER = "X-Part-Id"
"""The header (or the form field ``part_id``) that carries the client's id of the part in the picture."""


def model_id(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a model file (for OpenVINO IR: of the ``.xml`` and its ``.bin``), its id in the record."""
    digest = hashlib.sha256()
    p = Path(path)
    for part in (p, p.with_suffix(".bin")) if p.suffix.lower() == ".xml" else (p,):
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Answered:
    """One image the service answered, as the record needs it."""

    filename: str | None
    raw: bytes
    image: np.ndarray
    probs: np.ndarray
    ng_probability: float
    threshold: float
    verdict: str
    heat: np.ndarray | None
    overlay_png: bytes | None = None
    """The overlay the answer already carries (drawn again for the record only when it does not)."""


class LineRecord:
    """The service's side of the record: ``recorder`` with the answering model's id and settings."""

    def __init__(self, recorder: Recorder, model_path: str | os.PathLike[str], info: Any, method: str | None):
        self.recorder, self.info, self.method = recorder, info, method
        self.model_id = model_id(model_path)
        recorder.complete = features  # computed by the recorder's writer, for all the answers it writes at once
        recorder.register_model(self.model_id, info, str(model_path), info.summary.get("drift_reference"))  # training's

    def row(self, a: Answered, part_id: str | None, now: float) -> tuple[dict[str, Any], list[Kept]]:
        """The row of one answer (without the features :func:`features` computes), and the files to keep."""
        classes = self.info.classes
        top = int(a.probs.argmax())
        row = {
            "time": now,
            "part_id": part_id,
            "model_id": self.model_id,
            "model_version": self.info.version,
            "filename": None if a.filename is None else a.filename[:FILENAME_MAX],
            "class": classes[top],
            "probability": float(a.probs[top]),
            "probabilities": json.dumps(
                {c: round(float(p), 6) for c, p in zip(classes, a.probs, strict=True)}, ensure_ascii=False
            ),
            "verdict": a.verdict,
            "ng_probability": a.ng_probability,
            "threshold": a.threshold,
            "tta": self.info.tta,
            "method": self.method,
            "width": int(a.image.shape[1]),
            "height": int(a.image.shape[0]),
        }
        kept: list[Kept] = []
        if self.recorder.wants(a.verdict):
            suffix = os.path.splitext(a.filename or "upload.png")[1].lower() or ".img"
            kept.append(Kept(a.raw, suffix))
            if a.overlay_png is not None:
                kept.append(Kept(a.overlay_png, ".png"))
            elif a.heat is not None:
                kept.append(Kept(picture_png(a.image, a.heat, OVERLAY_SIDE), ".png"))
        return row, kept

    def record(self, answered: list[Answered], part_id: str | None) -> bool:
        """Record one request's images (every one with the request's part id); False when it could not be. Their
        image and heatmap features are computed by the recorder's writer thread, for many answers in a row."""
        now = time.time()
        pairs = [self.row(a, part_id, now) for a in answered]
        pictures = [(a.image, a.heat) for a in answered]
        return self.recorder.record([r for r, _ in pairs], [k for _, k in pairs], pictures)


def features(pictures: list[tuple[np.ndarray, np.ndarray | None]]) -> list[dict[str, Any]]:
    """The drift features of answered images (:mod:`mieruka.record.features`): of each image, and of its heatmap
    when there is one (the maps of one size summarised together)."""
    out = [image_features(image).as_dict() for image, _ in pictures]
    heats = {k: heat for k, (_, heat) in enumerate(pictures) if heat is not None}
    mapped = list(heats)
    summaries = in_stacks(heatmap_summaries, list(heats.values()))
    for k, summary in zip(mapped, summaries, strict=True):
        out[k].update(summary.as_dict())
    return out
