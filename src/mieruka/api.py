"""The Python surface: ``mieruka.load(path)`` and ``mieruka.train(data, out=…)``.

::

    import mieruka

    insp = mieruka.load("runs/r1/model.safetensors")      # or the exported .onnx / OpenVINO .xml
    for r in insp.predict(["part1.png", "part2.png"]):     # paths, PIL images or uint8 arrays
        print(r.image, r.label, r.verdict, r.probabilities)
    maps = insp.explain(["part1.png"], method="gradcam")   # heatmaps at each image's size, in [0, 1]
    summary = insp.audit("data/", out="audit/")            # the audit command's summary (AuditSummary)

Results are the commands' own types (:class:`~mieruka.results.Prediction`: ``predictions.csv``'s columns, class as
``label``; :class:`~mieruka.results.Explanation`: the prediction, the raw maps and ``heatmap`` at the image's size).
The same preprocessing, gate and methods as the commands run underneath.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mieruka.checkpoint import ModelInfo
from mieruka.errors import DataError, MierukaError
from mieruka.results import Explanation, Prediction

if TYPE_CHECKING:
    from mieruka.audit.summary import AuditSummary
    from mieruka.model_file import OpenedModel

__all__ = ["Explanation", "Inspector", "Prediction", "load", "train"]

ImageLike = Any
"""A path (str or os.PathLike), a PIL image, or a uint8 array (H, W) or (H, W, 3)."""


def _as_rgb(image: ImageLike) -> tuple[str, np.ndarray]:
    """A name for the results and the (H, W, 3) uint8 pixels of a path, PIL image or array."""
    from PIL import Image

    from mieruka.data.images import read_image

    if isinstance(image, (str, os.PathLike)):
        return str(image), read_image(image)
    if isinstance(image, Image.Image):
        return "<PIL image>", np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise DataError(f"an array image must be uint8 (H, W) or (H, W, 3); got {image.dtype} {image.shape}")
        return "<array>", np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    raise DataError(f"{type(image).__name__}: give image paths, PIL images or uint8 arrays")


class Inspector:
    """A loaded model: :meth:`predict`, :meth:`explain`, :meth:`audit` (see :func:`load`)."""

    def __init__(self, opened: OpenedModel, device: str) -> None:
        self.opened, self.device = opened, device
        self.path: Path = opened.file.path
        self.info: ModelInfo = opened.info

    def _prepare(self, images: Sequence[ImageLike]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
        from mieruka.runtime import prepare

        if isinstance(images, (str, os.PathLike, np.ndarray)) or not isinstance(images, Sequence):
            images = [images]
        named = [_as_rgb(im) for im in images]
        pixels = [p for _, p in named]
        return [n for n, _ in named], pixels, prepare(pixels, self.info) if pixels else np.zeros((0,))

    def _predictions(self, names: list[str], probs: np.ndarray, threshold: float | None) -> list[Prediction]:
        from mieruka.results import predictions

        t = self.info.decision_threshold if threshold is None else threshold
        return predictions(names, probs, self.info.classes, self.info.ng_classes, t)

    def predict(self, images: Sequence[ImageLike], *, threshold: float | None = None) -> list[Prediction]:
        """Class, probabilities and verdict (the model's gate, or ``threshold``) of each image, with the model's
        test-time augmentation."""
        names, _, x = self._prepare(images)
        if not names:
            return []
        return self._predictions(names, self.opened.probabilities(x, self.info.tta), threshold)

    def explain(
        self, images: Sequence[ImageLike], *, method: str | None = None, target: str = "pred"
    ) -> list[Explanation]:
        """Each image's heatmap for ``target`` (``pred``: the predicted class; a class name; ``ng``) by ``method``
        (default: an exported file's own method, else the method stored with the model, chosen on its validation
        regions). An exported file computes only its own method for the predicted class."""
        import torch

        from mieruka.explain.targets import TrueClass, parse_target

        file = self.opened.file
        file.check_request("explain", methods=[method] if method else None, target=target)
        names, pixels, x = self._prepare(images)
        if not names:
            return []
        given = method or file.stored_method
        targets = parse_target(target, self.info.classes, dict(self.info.verdicts))
        if not isinstance(targets, str) and any(isinstance(t, TrueClass) for t in targets):
            raise MierukaError(f"target {target!r} needs true labels; explain the predicted class or a class name")
        inputs = torch.from_numpy(x).to(self.opened.device)
        ex = self.opened.explain(inputs, file.resolve(given), targets)
        probs, maps = ex.probs.float().cpu().numpy(), ex.maps.float().cpu().numpy()
        classes = ex.class_indices.tolist()
        return [
            Explanation(
                prediction=p,
                method=given,
                target=target,
                maps=maps[i],
                explained=tuple(None if c < 0 else self.info.classes[c] for c in classes[i]),
                size=(int(px.shape[0]), int(px.shape[1])),
                fast_path=ex.fast_path,
            )
            for i, (p, px) in enumerate(zip(self._predictions(names, probs, None), pixels, strict=True))
        ]

    def audit(self, data: str | os.PathLike[str], *, out: str | os.PathLike[str], **options: Any) -> AuditSummary:
        """The ``audit`` command on ``data`` into ``out`` (``options``: :class:`~mieruka.audit.options.AuditOptions`'
        fields); returns its summary (``summary.json``, typed: ``.figures("gradcam").average_precision``)."""
        from mieruka.audit.run import run_audit

        return run_audit(self.path, data, out, **{"device": self.device, "progress": False, **options}).summary


def load(path: str | os.PathLike[str], *, device: str = "cpu", provider: str = "auto") -> Inspector:
    """A model for prediction, explanation and audit: a ``.safetensors`` from ``train`` (PyTorch on ``device``),
    or a file from ``export`` (``.onnx`` on ONNX Runtime's ``provider``, OpenVINO ``.xml``)."""
    from mieruka.model_file import open_model

    return Inspector(open_model(path, device, provider=provider), device)


def train(data: str | os.PathLike[str], *, out: str | os.PathLike[str], progress: bool = False, **options: Any) -> Any:
    """Train as ``mieruka train DATA --out OUT`` does; ``options`` are :class:`~mieruka.config.TrainConfig`'s
    fields (``epochs=…``, ``arch=…``, ``image_size=…``…). Returns the run's result (``.model_path`` and more)."""
    from mieruka.train import train_with_options

    return train_with_options(data, out=out, progress=progress, **options)
