"""Typed training configuration: one frozen dataclass, saved next to every run and inside its checkpoint."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mieruka.augment import AugmentConfig
from mieruka.data.images import BIT_DEPTHS
from mieruka.data.store import CACHE_CHOICES
from mieruka.tta import TRAIN_TTA_CHOICES

__all__ = ["BALANCE_CHOICES", "CACHE_CHOICES", "DEFAULT_ARCH", "GUIDE_CHOICES", "OUTPUT_STRIDES", "TrainConfig"]

DEFAULT_ARCH = "tf_efficientnet_lite0"
"""The default backbone: EfficientNet-Lite0, whose ImageNet weights install offline from PyPI."""

BALANCE_CHOICES = ("sqrt", "sampler", "loss", "none")

GUIDE_CHOICES = ("auto", "masks", "none")
"""``--guide``: ``auto`` is ``masks`` where NG training images have regions and the head allows it, else ``none``."""

OUTPUT_STRIDES = (32, 16, 8)
"""``--output-stride`` choices: the input pixels per cell of the last feature map (and so of the heatmap)."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning defaults for small, imbalanced inspection data sets.

    Attributes:
        arch: timm architecture.
        pretrained: ``imagenet`` (offline weights), ``none``, or a ``.safetensors`` file of timm weights.
        image_size: Images are resized to this square.
        output_stride: Input pixels per cell of the last feature map, which the heatmap has: 32 (the backbone as
            pretrained), or 16 / 8 (the last stages dilated instead of strided: the same pretrained weights, a
            map 2× / 4× finer at 2–4× the cost of those stages). Needs a backbone that timm builds dilated
            (:func:`mieruka.models.build_model` names the supported values otherwise).
        epochs: Maximum number of epochs.
        batch_size: Images per optimizer step.
        lr: Peak AdamW learning rate (reached after the warm-up, then cosine decay).
        weight_decay: AdamW weight decay (not applied to biases and normalization weights).
        warmup_epochs: Linear warm-up length.
        patience: Stop after this many epochs without a better validation balanced accuracy (0: never).
        label_smoothing: Cross-entropy label smoothing.
        balance: ``sqrt`` draws each class in proportion to the square root of its size (rare defects are seen
            several times per epoch while the large OK class is still seen in full); ``sampler`` draws every class
            equally often; ``loss`` weights the loss by inverse class frequency; ``none`` trains on the raw
            distribution.
        freeze_stages: Keep the stem and this many of the first feature stages fixed: generic ImageNet features
            at high resolution, whose backward pass costs the most. The default 3 keeps EfficientNet-Lite0 fixed up
            to stride 8 (7.5 % of its weights); a training step on a CPU then costs about 0.8 × that of 2 frozen
            stages, which pays for the extra epochs (docs/benchmarks-history.md#epoch-rules,
            docs/benchmarks-history.md#frozen-slices).
        ema_decay: Upper bound on the decay of the exponential moving average of the weights that is validated and
            saved; 0 turns averaging off. timm's warm-up sets the decay at step t to 1 − (1 + t)^(−2/3) while that
            is lower, so the bound only binds after 1/(1 − ema_decay)^1.5 steps (11,180 for 0.998): in a run of a
            few hundred steps, such as Magnetic Tile's 650, the average covers roughly the last 60–75 steps
            whatever this value. Averaging steadies the validation curve of small data sets, so the chosen epoch
            is not a lucky spike.
        tta: Test-time augmentation stored with the model for evaluate and predict: ``none`` (default, one view),
            ``flip``, ``d4``, or ``auto``, which picks among the views the training augmentation covered the one
            with the best validation balanced accuracy (ties go to fewer views).
        seed: Seed of weights, sampling and augmentation.
        split_seed: Seed of the stratified split when the data gives none.
        layout: How DATA is laid out (:data:`mieruka.data.sources.LAYOUTS`; ``auto`` detects it).
        ok_classes: Classes that pass; empty means the default naming rule.
        skip_bad: Skip unreadable images (listing them) instead of stopping.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        cache_gb: The RAM budget of ``cache="auto"`` in GiB.
        cache: Where the decoded training images are kept: ``ram``, ``disk`` (a file reused by later runs of the
            same data and size, :mod:`mieruka.data.diskcache`) or ``auto`` (RAM when they need at most
            ``cache_gb``, else disk).
        max_escape: Escape-rate target for the NG threshold chosen on the validation split (a bound on the
            probability that a new defect passes; see :mod:`mieruka.metrics`).
        guide: ``masks`` adds the right-for-the-right-reasons loss on NG training images with a marked region
            (:mod:`mieruka.train.guide`); ``none`` trains on the labels alone; ``auto`` (default): ``masks`` where
            NG training images have regions and the head has a closed-form CAM, else ``none``.
        guide_weight: Weight of that loss beside the cross-entropy (default 0.5).
        guide_fine: Weight of an experimental second guide term, the LayerCAM maps of the finer multi-scale stages
            outside the region (second-order, several times the cost of a step; 0: off, the default).
        explain_method: The explanation stored with the model for ``explain``, ``export``, ``serve`` and the Python
            API: ``auto`` (default) chooses it after training on the validation split's regions among the maps the
            exported graph computes, so the line shows what the audit measured; ``auto-all`` among every candidate,
            earlier layers included (:mod:`mieruka.audit.selection`; Grad-CAM where validation has none); or a
            method spec such as ``gradcam`` or ``layercam:multiscale/mean``.
        add_records: ``--add-records URL``: the line's record whose reviewed images join the training split.
        record_files: Where that record keeps its files, when it is a server database (a SQLite record keeps them
            beside it).
        bit_depth: Significant bits of 16-bit images (10, 12, 14 or 16; default: the container's 16), stored in
            the model so that every command and the service scale pixels the same way.
        augment: Augmentation strengths.
    """

    arch: str = DEFAULT_ARCH
    pretrained: str = "imagenet"
    image_size: int = 256
    output_stride: int = 32
    epochs: int = 26
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    patience: int = 8
    label_smoothing: float = 0.1
    balance: str = "sqrt"
    freeze_stages: int = 3
    ema_decay: float = 0.998
    tta: str = "none"
    seed: int = 0
    split_seed: int = 0
    layout: str = "auto"
    ok_classes: tuple[str, ...] = ()
    skip_bad: bool = False
    device: str = "auto"
    cache_gb: float = 4.0
    cache: str = "auto"
    max_escape: float = 0.0
    guide: str = "auto"
    guide_weight: float = 0.5
    guide_fine: float = 0.0
    explain_method: str = "auto"
    corrections: str = ""
    add_records: str = ""
    record_files: str = ""
    bit_depth: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 32, "--image-size must be at least 32"),
            (
                self.output_stride in OUTPUT_STRIDES,
                f"--output-stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}",
            ),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (not self.record_files or bool(self.add_records), "--record-files goes with --add-records URL"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.lr > 0, "--lr must be positive"),
            (self.weight_decay >= 0, "--weight-decay must not be negative"),
            (self.warmup_epochs >= 0, "--warmup-epochs must not be negative"),
            (self.patience >= 0, "--patience must not be negative"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must lie in [0, 1)"),
            (self.balance in BALANCE_CHOICES, f"--balance must be one of {', '.join(BALANCE_CHOICES)}"),
            (self.freeze_stages >= 0, "--freeze-stages must not be negative"),
            (0 <= self.ema_decay < 1, "--ema-decay must lie in [0, 1)"),
            (self.tta in TRAIN_TTA_CHOICES, f"--tta must be one of {', '.join(TRAIN_TTA_CHOICES)}"),
            (self.cache_gb >= 0, "--cache-gb must not be negative"),
            (self.cache in CACHE_CHOICES, f"--cache must be one of {', '.join(CACHE_CHOICES)}"),
            (self.layout in _layouts(), f"--layout must be one of {', '.join(_layouts())}"),
            (self.guide in GUIDE_CHOICES, f"--guide must be one of {', '.join(GUIDE_CHOICES)}"),
            (self.guide_weight >= 0, "--guide-weight must not be negative"),
            (self.guide_fine >= 0, "--guide-fine must not be negative"),
            (
                self.explain_method in _auto_choices() or _is_spec(self.explain_method),
                _spec_message(self.explain_method),
            ),
            (0 <= self.max_escape <= 1, "--max-escape must lie between 0 and 1"),
            (self.bit_depth in (None, *BIT_DEPTHS), f"--bit-depth must be one of {', '.join(map(str, BIT_DEPTHS))}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok_classes"] = list(self.ok_classes)
        return data

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read options from a JSON or TOML file (a run's ``config.json``, whose options sit under ``config``, too)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise ValueError(f"--config {path}: file not found") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"--config {path}: cannot parse ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        if not isinstance(data, dict):
            raise ValueError(f"--config {path}: expected a table of option names and values")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--config {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        _check_types(cls, values)
        if "augment" in values:
            augment = values["augment"]
            if not isinstance(augment, dict):
                raise ValueError(f"augment: expected a table of augmentation settings, got {augment!r}")
            unknown = sorted(set(augment) - {f.name for f in fields(AugmentConfig)})
            if unknown:
                raise ValueError(f"unknown augment option(s): {', '.join(unknown)}")
            _check_types(AugmentConfig, augment, prefix="augment.")
            values["augment"] = AugmentConfig(**augment)
        if "ok_classes" in values:
            values["ok_classes"] = tuple(values["ok_classes"])
        return cls(**values)


def _check_types(cls: type, values: dict[str, Any], prefix: str = "") -> None:
    """Every given value has its option's type (from the default): a message names the option and the type."""
    for f in fields(cls):
        if f.name not in values or f.name == "augment":
            continue
        value, default = values[f.name], f.default
        if f.name == "bit_depth":
            ok, kind = value is None or (isinstance(value, int) and not isinstance(value, bool)), "a whole number"
        elif f.name == "ok_classes":
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            kind = "a list of class names"
        elif isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        else:
            ok, kind = isinstance(value, str), "text"
        if not ok:
            raise ValueError(f"{prefix}{f.name}: expected {kind}, got {value!r}")


def _layouts() -> tuple[str, ...]:
    from mieruka.data.sources import LAYOUTS

    return LAYOUTS


def _auto_choices() -> tuple[str, ...]:
    from mieruka.explain.spec import AUTO_CHOICES

    return AUTO_CHOICES


def _is_spec(spec: str) -> bool:
    from mieruka.explain.spec import parse_method_spec

    try:
        parse_method_spec(spec)
    except ValueError:
        return False
    return True


def _spec_message(spec: str) -> str:
    return (
        f"--explain-method {spec!r}: give auto, auto-all or a method spec such as gradcam or layercam:multiscale/mean"
    )
