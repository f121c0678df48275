"""The Python surface: ``mieruka.load(path)`` and ``mieruka.train(data, out=…)``.

::

    import mieruka

    insp = mieruka.load("runs/r1/model.safetensors")      # or the exported .onnx / OpenVINO .xml
    for r in insp.predict(["part1.png", "part2.png"]):     # paths, PIL images or uint8 arrays
        print(r.image, r.label, r.verdict, r.probabilities)
    maps = insp.explain(["part1.png"], method="gradcam")   # heatmaps at each image's size, in [0, 1]
    summary = insp.audit("data/", out="audit/")            # the audit command's summary.json, as a dict

Results are frozen dataclasses with the fields of the command's files (``predictions.csv``: image, class as
``label``, probability, verdict, ng_probability, one probability per class). The same preprocessing, gate and
methods as the commands run underneath.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mieruka.checkpoint import ModelInfo
from mieruka.errors import DataError, MierukaError

__all__ = ["Explanation", "Inspector", "Prediction", "load", "train"]

ImageLike = Any
"""A path (str or os.PathLike), a PIL image, or a uint8 array (H, W) or (H, W, 3)."""


@dataclass(frozen=True)
class Prediction:
    """One image's result: ``predictions.csv``'s columns."""

    image: str
    label: str
    probability: float
    verdict: str
    ng_probability: float
    probabilities: dict[str, float]
    threshold: float


@dataclass(frozen=True)
class Explanation:
    """One image's heatmap (H, W) at the image's own size, min–max scaled to [0, 1], with its prediction."""

    prediction: Prediction
    method: str
    target: str
    heatmap: np.ndarray


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

    def __init__(self, path: Path, runtime: Any, device: str) -> None:
        self.path, self.runtime, self.device = path, runtime, device
        self.info: ModelInfo = runtime.info

    def _prepare(self, images: Sequence[ImageLike]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
        from mieruka.runtime import prepare

        if isinstance(images, (str, os.PathLike, np.ndarray)) or not isinstance(images, Sequence):
            images = [images]
        named = [_as_rgb(im) for im in images]
        pixels = [p for _, p in named]
        return [n for n, _ in named], pixels, prepare(pixels, self.info) if pixels else np.zeros((0,))

    def _predictions(self, names: list[str], probs: np.ndarray, threshold: float | None) -> list[Prediction]:
        from mieruka.metrics import gate, ng_probability

        t = self.info.decision_threshold if threshold is None else threshold
        rejected, p_ng = gate(probs, self.info.ng_classes, t), ng_probability(probs, self.info.ng_classes)
        out = []
        for i, name in enumerate(names):
            top = int(probs[i].argmax())
            out.append(
                Prediction(
                    image=name,
                    label=self.info.classes[top],
                    probability=float(probs[i, top]),
                    verdict="NG" if rejected[i] else "OK",
                    ng_probability=float(p_ng[i]),
                    probabilities={c: float(p) for c, p in zip(self.info.classes, probs[i], strict=True)},
                    threshold=t,
                )
            )
        return out

    def predict(self, images: Sequence[ImageLike], *, threshold: float | None = None) -> list[Prediction]:
        """Class, probabilities and verdict (the model's gate, or ``threshold``) of each image, with the model's
        test-time augmentation."""
        from mieruka.runtime import run_with_tta

        names, _, x = self._prepare(images)
        if not names:
            return []
        probs, _ = run_with_tta(self.runtime, x, self.info.tta)
        return self._predictions(names, probs, threshold)

    def explain(
        self, images: Sequence[ImageLike], *, method: str | None = None, target: str = "pred"
    ) -> list[Explanation]:
        """Each image's heatmap for ``target`` (``pred``: the predicted class; a class name; ``ng``) by ``method``
        (default: an exported file's own method, else the method stored with the model, chosen on its validation
        regions). An exported file computes only its own method for the predicted class."""
        names, pixels, x = self._prepare(images)
        if not names:
            return []
        if self.runtime.backend != "pytorch":
            exported = self.runtime.method
            if exported is None or (method or exported) != exported or target != "pred":
                raise MierukaError(
                    f"{self.path.name} computes {exported or 'no heatmap'} for the predicted class only; explain "
                    f"method={method or exported!r}, target={target!r} with the .safetensors model"
                )
            probs, heat = self.runtime.run(x)
            maps = [heat[i] for i in range(len(names))]
            method = exported
        else:
            probs, maps, method = self._torch_maps(x, method or self.info.explain_method, target)
        import torch

        from mieruka.explain.render import to_original_size
        from mieruka.explain.scaling import minmax_np

        predictions = self._predictions(names, probs, None)
        return [
            Explanation(
                prediction=p,
                method=method,
                target=target,
                heatmap=minmax_np(to_original_size(torch.from_numpy(np.asarray(m, np.float32)), px.shape[:2]).numpy()),
            )
            for p, m, px in zip(predictions, maps, pixels, strict=True)
        ]

    def _torch_maps(self, x: np.ndarray, spec: str, target: str) -> tuple[np.ndarray, list[np.ndarray], str]:
        import torch

        from mieruka.explain.engine import explain, multiscale_layers
        from mieruka.explain.spec import MULTISCALE, parse_method_spec
        from mieruka.explain.targets import TrueClass, parse_target

        model = self.runtime.module.model
        method, layers, fusion = parse_method_spec(spec)
        if layers == (MULTISCALE,):
            layers = multiscale_layers(model)
        targets = parse_target(target, self.info.classes, dict(self.info.verdicts))
        if not isinstance(targets, str) and any(isinstance(t, TrueClass) for t in targets):
            raise MierukaError(f"target {target!r} needs true labels; explain the predicted class or a class name")
        device = next(model.parameters()).device
        inputs = torch.from_numpy(x).to(device)
        ex = explain(model, inputs, method=method, targets=targets, layers=layers or None, fusion=fusion)
        return ex.probs.float().cpu().numpy(), list(ex.maps[:, 0].float().cpu().numpy()), spec

    def audit(self, data: str | os.PathLike[str], *, out: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
        """The ``audit`` command on ``data`` into ``out`` (options as :func:`mieruka.audit.run.run_audit` takes
        them); returns its ``summary.json`` as a dict."""
        import json

        from mieruka.audit.run import run_audit

        if self.runtime.backend != "pytorch":
            raise MierukaError(f"{self.path.name}: the audit runs on the .safetensors model (it computes every method)")
        run_audit(self.path, data, out, **{"device": self.device, "progress": False, **options})
        return json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))


def load(path: str | os.PathLike[str], *, device: str = "cpu", provider: str = "auto") -> Inspector:
    """A model for prediction, explanation and audit: a ``.safetensors`` from ``train`` (PyTorch on ``device``),
    or a file from ``export`` (``.onnx`` on ONNX Runtime's ``provider``, OpenVINO ``.xml``)."""
    from mieruka.runtime import load_runtime

    return Inspector(Path(path), load_runtime(path, device=device, provider=provider), device)


def train(data: str | os.PathLike[str], *, out: str | os.PathLike[str], progress: bool = False, **options: Any) -> Any:
    """Train as ``mieruka train DATA --out OUT`` does; ``options`` are :class:`~mieruka.config.TrainConfig`'s
    fields (``epochs=…``, ``arch=…``, ``image_size=…``…). Returns the run's result (``.model_path`` and more)."""
    from mieruka.train import train_with_options

    return train_with_options(data, out=out, progress=progress, **options)
