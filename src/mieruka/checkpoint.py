"""The model file: one ``.safetensors`` whose metadata carries everything needed to rebuild and use the model.

Loading never unpickles. A SHA-256 over the tensors, stored in the metadata, turns a truncated or tampered file into
a clear error instead of a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mieruka import __version__
from mieruka._io import atomic_write
from mieruka.errors import CheckpointError
from mieruka.metrics import DEFAULT_NG_THRESHOLD

if TYPE_CHECKING:
    from mieruka.data.dataset import Dataset

__all__ = ["FORMAT", "ModelInfo", "load_checkpoint", "read_info", "save_checkpoint", "tensor_digest"]

FORMAT = "mieruka.checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a trained model is and how to feed it.

    Attributes:
        arch: timm architecture name.
        classes: Class names in output order.
        verdicts: Class name → ``"OK"``/``"NG"``.
        image_size: Side of the square input.
        mean: Per-channel normalization mean (inputs scaled to 0–1 first).
        std: Per-channel normalization standard deviation.
        target_layer: Default layer to explain (the last convolutional block).
        ng_threshold: NG-probability threshold chosen on the validation split, if one was.
        tta: Test-time augmentation used by evaluate and predict (``none``, ``flip``, ``d4``), chosen on the
            validation split at the end of training.
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
    ng_threshold: float | None = None
    tta: str = "none"
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

    def load_dataset(self, source: str | os.PathLike[str]) -> Dataset:
        """Index a data set as this model sees it: its class order, its verdicts, its split seed."""
        from mieruka.data.dataset import load_dataset

        return load_dataset(
            source, classes=self.classes, verdicts=self.verdicts, split_seed=int(self.config.get("split_seed", 0))
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        data["classes"] = tuple(data["classes"])
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
        "sha256": tensor_digest(tensors),
        **(extra_meta or {}),
    }
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
    if metadata.get("sha256") != tensor_digest(tensors):
        raise CheckpointError(f"{path}: the weights do not match their recorded checksum; the file was altered")
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
    model = build_model(info.arch, len(info.classes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit {info.arch} with {len(info.classes)} classes ({str(exc).splitlines()[0]})"
        ) from None
    model.to(device).eval()
    return model, info, {"metadata": metadata, "extra": extra}
