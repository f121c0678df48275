"""What the commands and the Python API give per image: one :class:`Prediction` and one :class:`Explanation` type.

``mieruka predict`` writes a :class:`Prediction` per row of its CSV, ``mieruka explain`` writes an
:class:`Explanation` per panel and map, and :func:`mieruka.load`'s ``predict`` / ``explain`` return the same
objects, so a script and the files say the same thing in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mieruka.metrics import gate, ng_probability

__all__ = ["Explanation", "Prediction", "predictions", "verdict_word"]


def verdict_word(rejected: bool) -> str:
    """The inspection verdict of a gate's answer: ``NG`` (rejected) or ``OK``."""
    return "NG" if rejected else "OK"


@dataclass(frozen=True)
class Prediction:
    """One image's result: ``predictions.csv``'s columns.

    Attributes:
        image: The image's path (or ``<array>`` / ``<PIL image>`` for images given as pixels).
        label: The predicted class.
        probability: Its probability.
        verdict: ``OK`` or ``NG``: the model's gate (:func:`mieruka.metrics.gate`) at ``threshold``.
        ng_probability: The summed probability of the NG classes.
        probabilities: Every class's probability, in the model's class order.
        threshold: The NG threshold the verdict used.
        error: Why the image could not be classified (empty when it was); the other fields are then empty or NaN.
    """

    image: str
    label: str
    probability: float
    verdict: str
    ng_probability: float
    probabilities: Mapping[str, float]
    threshold: float
    error: str = ""

    @classmethod
    def unreadable(cls, image: str, error: str, threshold: float) -> Prediction:
        """The row of an image that could not be read."""
        return cls(image, "", float("nan"), "", float("nan"), {}, threshold, error)


def predictions(
    images: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    ng_classes: Sequence[int],
    threshold: float,
) -> list[Prediction]:
    """The predictions of ``images`` from their probabilities (N, C): top class, gate verdict, P(NG)."""
    if not len(images):
        return []
    rejected, p_ng = gate(probs, ng_classes, threshold), ng_probability(probs, ng_classes)
    out = []
    for i, image in enumerate(images):
        top = int(probs[i].argmax())
        values = {c: float(v) for c, v in zip(classes, probs[i], strict=True)}
        verdict = verdict_word(bool(rejected[i]))
        out.append(Prediction(image, classes[top], float(probs[i, top]), verdict, float(p_ng[i]), values, threshold))
    return out


@dataclass(frozen=True)
class Explanation:
    """One image's explanation: its prediction and the maps of what was explained.

    Attributes:
        prediction: The image's :class:`Prediction` (with ``error`` set when it could not be read).
        method: The method spec that made the maps.
        target: What the maps explain (``pred``, ``true``, ``ng``, ``all`` or a class name).
        maps: (T, S, S) float32 maps at the model's input size, one per explained target, before display
            scaling (an exported graph's map is already min–max scaled); None for an unreadable image.
        explained: The class each map explains (None where the target is not one class).
        size: The image's own (height, width), where :attr:`heatmap` is drawn.
        fast_path: Whether the closed-form gradient made the maps.
    """

    prediction: Prediction
    method: str
    target: str
    maps: np.ndarray | None = None
    explained: tuple[str | None, ...] = ()
    size: tuple[int, int] | None = None
    fast_path: bool = True

    @property
    def error(self) -> str:
        return self.prediction.error

    @cached_property
    def heatmap(self) -> np.ndarray:
        """The first map at the image's own size, min–max scaled to [0, 1] (H, W): what a panel shows."""
        import torch

        from mieruka.explain.render import to_original_size
        from mieruka.explain.scaling import minmax_np

        if self.maps is None:
            raise ValueError(f"{self.prediction.image}: no map ({self.error})")
        first = torch.from_numpy(np.asarray(self.maps[0], dtype=np.float32))
        size = self.size or (int(first.shape[0]), int(first.shape[1]))
        return minmax_np(to_original_size(first, size).numpy())
