"""The model file: one ``.safetensors`` whose metadata carries everything needed to rebuild and use the model.

Loading never unpickles. A SHA-256 over the tensors *and* the metadata (the model description: classes, verdicts,
input size, NG threshold …), stored in the metadata, turns a truncated or tampered file into a clear error instead
of a silently different model: a file whose verdicts were edited to pass every defect is refused like one whose
weights were. Every value of the description is also checked on load, with a message naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mieruka import __version__
from mieruka._io import atomic_write
from mieruka.errors import CheckpointError, MierukaError
from mieruka.metrics import DEFAULT_NG_THRESHOLD

if TYPE_CHECKING:
    from mieruka.data.dataset import Dataset

__all__ = ["FORMAT", "ModelInfo", "info_problems", "load_checkpoint", "read_info", "save_checkpoint", "tensor_digest"]

FORMAT = "mieruka.checkpoint"
FORMAT_VERSION = 2
"""2: the checksum covers the metadata too (1 covered the tensors only and is no longer read)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a trained model is and how to feed it.

    Attributes:
        arch: timm architecture name.
        classes: Class names in output order.
        verdicts: Class name → ``"OK"``/``"NG"``.
        image_size: Side of the square input.
        output_stride: Input pixels per cell of the last feature map (32, or 16 / 8 for a dilated backbone): the
            heatmap's resolution; files written before the option existed are 32.
        mean: Per-channel normalization mean (inputs scaled to 0–1 first).
        std: Per-channel normalization standard deviation.
        target_layer: Default layer to explain (the last convolutional block).
        ng_threshold: NG-probability threshold chosen on the validation split, if one was.
        tta: Test-time augmentation used by evaluate and predict (``none``, ``flip``, ``d4``), chosen on the
            validation split at the end of training.
        bit_depth: Significant bits of 16-bit input images (``--bit-depth``), applied by every command and the
            service; None: the container's 16 bits.
        explain_method: The explanation method spec that ``explain``, ``export``, ``serve`` and the Python API use
            by default, chosen on the validation split (:mod:`mieruka.audit.selection`); ``gradcam`` for files
            written before the choice existed.
        method_selection: How it was chosen: the candidates' validation figures and the reason (empty: not
            chosen, e.g. given with ``train --explain-method``).
        version: mieruka version that wrote the file.
        config: The resolved training configuration.
        summary: Training summary metrics.
    """

    arch: str
    classes: tuple[str, ...]
    verdicts: dict[str, str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_layer: str
    output_stride: int = 32
    ng_threshold: float | None = None
    tta: str = "none"
    bit_depth: int | None = None
    explain_method: str = "gradcam"
    method_selection: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def decision_threshold(self) -> float:
        """The NG-probability threshold ``predict``, the service and the report apply: the one chosen on the
        validation split, else :data:`~mieruka.metrics.DEFAULT_NG_THRESHOLD`."""
        return DEFAULT_NG_THRESHOLD if self.ng_threshold is None else float(self.ng_threshold)

    @property
    def ng_classes(self) -> list[int]:
        """Indices of the classes whose verdict is NG."""
        return [i for i, c in enumerate(self.classes) if self.verdicts[c] == "NG"]

    def load_dataset(self, source: str | os.PathLike[str], layout: str | None = None) -> Dataset:
        """Index a data set as this model sees it: its class order, its verdicts, its split seed, and (unless
        ``layout`` says otherwise) the layout it was trained with when one was named."""
        from mieruka.data.dataset import load_dataset

        return load_dataset(
            source,
            classes=self.classes,
            verdicts=self.verdicts,
            split_seed=int(self.config.get("split_seed", 0)),
            layout=layout or str(self.config.get("layout", "auto")),
        )

    def with_layout(self, layout: str | None) -> ModelInfo:
        """This description, reading data sets with ``layout`` (``--layout``) instead of the training's, if given."""
        return self if not layout else replace(self, config={**self.config, "layout": layout})

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse and check a description; raises ``ValueError`` naming every field that is missing or wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the description is not a JSON object")
        problems = info_problems(data)
        if problems:
            raise ValueError("; ".join(problems))
        data["classes"] = tuple(data["classes"])
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_spec(spec: Any) -> bool:
    from mieruka.explain.spec import parse_method_spec

    try:
        parse_method_spec(spec)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def info_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with a model description (empty when nothing is): each problem names its field."""
    from mieruka.data.images import BIT_DEPTHS
    from mieruka.tta import TTA_CHOICES

    p: list[str] = []
    classes = data.get("classes")
    class_list = classes if isinstance(classes, list | tuple) else []
    checks = [
        ("arch", isinstance(data.get("arch"), str) and bool(data.get("arch")), "a timm architecture name"),
        (
            "classes",
            bool(class_list)
            and all(isinstance(c, str) and c for c in class_list)
            and len(set(class_list)) == len(class_list),
            "a list of distinct, non-empty class names",
        ),
        (
            "verdicts",
            isinstance(data.get("verdicts"), dict)
            and set(data["verdicts"]) == set(class_list)
            and all(v in ("OK", "NG") for v in data["verdicts"].values()),
            "OK or NG for every class",
        ),
        (
            "image_size",
            isinstance(data.get("image_size"), int)
            and not isinstance(data.get("image_size"), bool)
            and 16 <= data["image_size"] <= 8192,
            "a whole number of pixels from 16 to 8192",
        ),
        ("output_stride", data.get("output_stride", 32) in (32, 16, 8), "32, 16 or 8"),
        ("target_layer", isinstance(data.get("target_layer"), str) and bool(data.get("target_layer")), "a layer name"),
        (
            "ng_threshold",
            data.get("ng_threshold") is None or (_is_number(data["ng_threshold"]) and 0 <= data["ng_threshold"] <= 1),
            "a probability from 0 to 1, or null",
        ),
        ("tta", data.get("tta", "none") in TTA_CHOICES, f"one of {', '.join(TTA_CHOICES)}"),
        ("bit_depth", data.get("bit_depth") in (None, *BIT_DEPTHS), f"null or one of {BIT_DEPTHS}"),
        ("explain_method", _is_spec(data.get("explain_method", "gradcam")), "a method spec such as gradcam"),
        ("method_selection", isinstance(data.get("method_selection", {}), dict), "a table"),
        ("config", isinstance(data.get("config", {}), dict), "a table"),
        ("summary", isinstance(data.get("summary", {}), dict), "a table"),
    ]
    for key in ("mean", "std"):
        v = data.get(key)
        values = list(v) if isinstance(v, list | tuple) else []
        ok = len(values) == 3 and all(_is_number(x) for x in values)
        checks.append((key, ok and (key == "mean" or all(x > 0 for x in values)), "three numbers (std above 0)"))
    for name, ok, expected in checks:
        if not ok:
            p.append(f"{name} is {data.get(name)!r}, expected {expected}")
    return p


def tensor_digest(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in sorted name order, then over the metadata
    (every key but ``sha256`` itself, sorted)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(sorted((k, v) for k, v in metadata.items() if k != "sha256")).encode("utf-8"))
    return h.hexdigest()


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Never save a torch.compile / DataParallel wrapper's names.
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    return {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    info: ModelInfo,
    extra: dict[str, torch.Tensor] | None = None,
    extra_meta: dict[str, str] | None = None,
) -> Path:
    """Write the model's weights and ``info`` to one safetensors file, atomically.

    Args:
        path: Destination ``.safetensors`` file.
        model: The (unwrapped or wrapped) model.
        info: Its description.
        extra: More tensors to store (training state for ``--resume``), under names starting with ``_``.
        extra_meta: More string metadata.
    """
    state = _plain_state(model)
    tensors = dict(state)
    for name, t in (extra or {}).items():
        tensors[name] = t.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "info": info.to_json(),
        **(extra_meta or {}),
    }
    metadata["sha256"] = tensor_digest(tensors, metadata)
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def _open(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated or of another format"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a mieruka model (no mieruka metadata)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format {metadata.get('format_version')!r}, but this mieruka reads format "
            f"{FORMAT_VERSION} only (its checksum also covers the model description); train the model again"
        )
    if metadata.get("sha256") != tensor_digest(tensors, metadata):
        raise CheckpointError(
            f"{path}: the weights or the model description do not match their recorded checksum; the file was altered"
        )
    return metadata, tensors


def read_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The :class:`ModelInfo` of a model file, without building the model."""
    metadata, _ = _open(Path(path))
    return _parse_info(Path(path), metadata)


def _parse_info(path: Path, metadata: dict[str, str]) -> ModelInfo:
    try:
        return ModelInfo.from_json(metadata["info"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the model description in the metadata is damaged ({exc})") from None


def _check_arch(path: Path, arch: str) -> None:
    from mieruka.models import check_arch

    try:
        check_arch(arch)
    except MierukaError:
        raise CheckpointError(
            f"{path}: the model description names the architecture {arch!r}, which timm does not have here; the "
            "file's metadata is damaged, or it needs another timm version"
        ) from None


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ModelInfo, dict[str, Any]]:
    """Rebuild a model from its file, in eval mode on ``device``.

    Returns:
        The model, its :class:`ModelInfo`, and a dict with the file's raw ``metadata`` and ``extra`` tensors (names
        starting with ``_``; used by ``--resume``).

    Raises:
        CheckpointError: Missing, truncated, tampered, foreign, or inconsistent file.
    """
    from mieruka.models import build_model

    path = Path(path)
    metadata, tensors = _open(path)
    info = _parse_info(path, metadata)
    extra = {k: v for k, v in tensors.items() if k.startswith("_")}
    state = {k: v for k, v in tensors.items() if not k.startswith("_")}
    _check_arch(path, info.arch)
    model = build_model(info.arch, len(info.classes), image_size=info.image_size, output_stride=info.output_stride)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit {info.arch} with {len(info.classes)} classes ({str(exc).splitlines()[0]})"
        ) from None
    _check_layers(path, model, info)
    model.to(device).eval()
    return model, info, {"metadata": metadata, "extra": extra}


def _check_layers(path: Path, model: nn.Module, info: ModelInfo) -> None:
    """The layers the description names (its explanation layer and its method's) are modules of the model: a file
    that names others is at fault, and is named, before a command blames an option the user never gave."""
    from mieruka.explain.spec import MULTISCALE, parse_method_spec

    modules = dict(model.named_modules())
    named = [("target_layer", info.target_layer)]
    named += [
        ("explain_method", layer) for layer in parse_method_spec(info.explain_method).layers if layer != MULTISCALE
    ]
    wrong = [f"{field} names {layer!r}" for field, layer in named if layer not in modules]
    if wrong:
        raise CheckpointError(
            f"{path}: the model description {'; '.join(wrong)}, which {info.arch} does not have; the file is damaged "
            "or was written for another model (train it again, or give the method with --method)"
        )
