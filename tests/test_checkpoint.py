from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mieruka.checkpoint import ModelInfo, load_checkpoint, read_info, save_checkpoint
from mieruka.errors import CheckpointError
from mieruka.models import build_model


def _info() -> ModelInfo:
    return ModelInfo(
        arch="resnet18",
        classes=("欠陥A", "正常(キズ)"),
        verdicts={"欠陥A": "NG", "正常(キズ)": "OK"},
        image_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        target_layer="layer4",
        ng_threshold=0.25,
        config={"epochs": 3},
        summary={"val_balanced_accuracy": 0.9},
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("resnet18", 2).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, _info())
    return path, model


def test_round_trip_gives_same_outputs_and_info(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded, info, _ = load_checkpoint(path)
    assert info == _info()
    assert read_info(path) == _info()
    assert not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_compiled_wrapper_is_saved_unwrapped(tmp_path: Path) -> None:
    model = build_model("resnet18", 2)
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule exposes
    save_checkpoint(tmp_path / "w.safetensors", wrapper, _info())
    loaded, _, _ = load_checkpoint(tmp_path / "w.safetensors")
    torch.testing.assert_close(loaded.state_dict()["fc.weight"], model.state_dict()["fc.weight"])


def test_truncated_file(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_tampered_weights(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_foreign_safetensors_and_pickle(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a mieruka model"):
        load_checkpoint(tmp_path / "other.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")  # a pickle: must be refused, never unpickled
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite_metadata(path: Path, edit, *, recompute_digest: bool) -> None:
    """Rewrite the file with edited metadata; with ``recompute_digest`` as a careful forger would."""
    from safetensors import safe_open

    from mieruka.checkpoint import tensor_digest

    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    edit(metadata)
    if recompute_digest:
        metadata["sha256"] = tensor_digest(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def _edit_info(**changes):
    import json

    def edit(metadata: dict[str, str]) -> None:
        info = json.loads(metadata["info"])
        info.update(changes)
        metadata["info"] = json.dumps(info)

    return edit


def test_edited_verdicts_are_refused_like_edited_weights(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    _rewrite_metadata(path, _edit_info(verdicts={"欠陥A": "OK", "正常(キズ)": "OK"}), recompute_digest=False)
    with pytest.raises(CheckpointError, match="the weights or the model description do not match"):
        read_info(path)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"image_size": "abc"}, "image_size is 'abc', expected a whole number of pixels"),
        ({"verdicts": {"欠陥A": "maybe", "正常(キズ)": "OK"}}, "verdicts is"),
        ({"ng_threshold": 3.0}, "ng_threshold is 3.0, expected a probability"),
        ({"std": [0.5, 0, 0.5]}, "std is [0.5, 0, 0.5]"),
        ({"tta": "d8"}, "tta is 'd8'"),
    ],
)
def test_every_metadata_value_is_checked_on_load(saved: tuple[Path, torch.nn.Module], changes, needle: str) -> None:
    path, _ = saved
    _rewrite_metadata(path, _edit_info(**changes), recompute_digest=True)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "the model description in the metadata is damaged" in str(err.value) and needle in str(err.value)


def test_an_unknown_architecture_in_the_file_blames_the_file(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    _rewrite_metadata(path, _edit_info(arch="os.system"), recompute_digest=True)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "names the architecture 'os.system'" in str(err.value) and "--arch" not in str(err.value)


def test_a_file_of_the_older_format_is_refused(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved

    def older(metadata: dict[str, str]) -> None:
        metadata["format_version"] = "1"

    _rewrite_metadata(path, older, recompute_digest=True)
    with pytest.raises(CheckpointError, match="checkpoint format '1'"):
        read_info(path)
