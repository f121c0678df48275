from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY, torch_threads
from PIL import Image

import mieruka.train.loop as train_loop
from mieruka.checkpoint import load_checkpoint
from mieruka.errors import DataError
from mieruka.models import build_model
from mieruka.train import train
from mieruka.train.frozen import FrozenPrefix, freeze_stages, frozen_batchnorms


def test_run_folder_contents(tiny_run: Path, synth_dir: Path) -> None:
    for name in (
        "model.safetensors",
        "resume.safetensors",
        "config.json",
        "split.csv",
        "history.csv",
        "history.json",
        "training_curve.png",
    ):
        assert (tiny_run / name).is_file(), name
    history = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    _, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    assert info.classes == ("blowhole", "crack", "good", "normal (dirt)", "normal (scratch)", "scratch")
    assert info.verdicts["normal (dirt)"] == "OK" and info.verdicts["crack"] == "NG"
    assert info.target_layer == "bn2" and info.image_size == 64 and info.mean == (0.5, 0.5, 0.5)
    assert info.config["epochs"] == 2 and 0.0 <= info.ng_threshold <= 1.0
    # test-time augmentation chosen on validation among the views training covered
    by_tta = info.summary["val_balanced_accuracy_by_tta"]
    assert set(by_tta) == {"none", "flip", "d4"}
    assert by_tta[info.tta] == max(by_tta.values())
    best = max(history, key=lambda h: h["val_balanced_accuracy"])
    assert info.summary["val_balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"], abs=1e-6)
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["config"]["image_size"] == 64
    with open(tiny_run / "split.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and {r["split"] for r in rows} == {"train", "val", "test"}


def test_training_is_repeatable(synth_dir: Path, tiny_run: Path, tmp_path: Path) -> None:
    with torch_threads(2):  # as tiny_run was trained: float sums depend on the number of threads
        train(synth_dir, tmp_path, TINY, progress=False)
    a = json.loads((tiny_run / "history.json").read_text())
    b = json.loads((tmp_path / "history.json").read_text())
    for x, y in zip(a, b, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)


def test_resume_continues_an_interrupted_run(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = replace(TINY, epochs=3)
    full = tmp_path / "full"
    train(synth_dir, full, cfg, progress=False)

    calls = {"n": 0}
    original = train_loop.optimizer_tensors

    def die_in_second_epoch(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after epoch 2's model file, before its resume state
        return original(opt)

    cut = tmp_path / "cut"
    monkeypatch.setattr(train_loop, "optimizer_tensors", die_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(synth_dir, cut, cfg, progress=False)
    monkeypatch.setattr(train_loop, "optimizer_tensors", original)
    assert json.loads((cut / "history.json").read_text())[-1]["epoch"] == 2
    result = train(synth_dir, cut, resume=True, progress=False)
    a = json.loads((full / "history.json").read_text())
    b = [h for h in result.history]
    assert [h["epoch"] for h in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_balanced_accuracy"] == pytest.approx(y["val_balanced_accuracy"], abs=1e-9)
    assert not list(cut.glob(".*.tmp")), "no temporary files left behind"


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path, synth_dir: Path) -> None:
    with pytest.raises(ValueError, match="--resume: .* holds no interrupted run"):
        train(synth_dir, tmp_path, resume=True, progress=False)


def _copy(synth_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    return data


def test_bad_images_stop_before_training_and_are_listed(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    empty = data / "crack" / "zero.png"
    empty.write_bytes(b"")
    text = data / "good" / "notes.png"
    text.write_text("not an image")
    run = tmp_path / "run"
    with pytest.raises(DataError) as err:
        train(data, run, replace(TINY, split_seed=0), progress=False)
    message = str(err.value)
    assert "2 image(s) cannot be used" in message and str(empty) in message and str(text) in message
    assert "--skip-bad" in message
    assert not (run / "model.safetensors").exists()
    with open(run / "bad_images.csv", encoding="utf-8") as fh:
        assert {Path(r["image"]) for r in csv.DictReader(fh)} == {empty, text}


def test_skip_bad_trains_without_them(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy(synth_dir, tmp_path)
    for i in range(3):  # enough that at least one lands in train or val
        (data / "crack" / f"zero{i}.png").write_bytes(b"")
    result = train(data, tmp_path / "run", replace(TINY, epochs=1, skip_bad=True), progress=False)
    assert result.model_path.is_file()
    assert "zero" in capsys.readouterr().out


def test_class_with_too_few_images(tmp_path: Path) -> None:
    for cls, n in (("good", 5), ("crack", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("L", (16, 16), i).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(DataError, match="class 'crack' has 2 image"):
        train(tmp_path, tmp_path / "run", TINY, progress=False)


def test_freeze_stages_freezes_only_the_early_layers() -> None:
    model = build_model("tf_efficientnet_lite0", 3)
    frozen = freeze_stages(model, 2)
    assert frozen[0] == "conv_stem.weight" and all(not n.startswith("blocks.2") for n in frozen)
    assert any(n.startswith("blocks.1") for n in frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable[0].startswith("blocks.2.") and "classifier.weight" in trainable


@pytest.mark.parametrize(("arch", "stages", "first_trainable"), [("tf_efficientnet_lite0", 3, 6), ("resnet18", 2, 5)])
def test_frozen_prefix_gives_the_same_logits_and_gradients(
    arch: str, stages: int, first_trainable: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 4).to(memory_format=torch.channels_last)
    frozen = set(freeze_stages(model, stages))
    split = FrozenPrefix.split(model)
    assert split is not None and len(split.prefix) == first_trainable
    model.train()
    for module in frozen_batchnorms(model, frozen):
        module.eval()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    for batch, per_slice, exact in ((6, 3, True), (5, 2, False)):
        # Slices of equal size give the very same numbers; a slice of one image may take another kernel.
        monkeypatch.setattr("mieruka.inference.CPU_PIXELS_PER_PASS", per_slice * 64 * 64)
        x = torch.randn(batch, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        outputs = []
        for forward in (model, split):
            torch.manual_seed(1)  # the head's dropout draws the same mask
            logits = forward(x)
            torch.nn.functional.cross_entropy(logits, y[:batch]).backward()
            grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
            model.zero_grad(set_to_none=True)
            outputs.append((logits.detach(), grads))
        (a, grads_a), (b, grads_b) = outputs
        assert len(grads_a) == len(grads_b) > 0
        if exact:
            assert torch.equal(a, b) and all(torch.equal(g, h) for g, h in zip(grads_a, grads_b, strict=True))
        else:
            assert torch.allclose(a, b, atol=1e-4)
            assert all(torch.allclose(g, h, rtol=1e-3, atol=1e-5) for g, h in zip(grads_a, grads_b, strict=True))


def test_frozen_prefix_is_not_used_where_it_would_change_the_result() -> None:
    model = build_model("resnet18", 3)
    assert FrozenPrefix.split(model) is None  # nothing frozen
    freeze_stages(model, 2)
    model.act1 = torch.nn.Dropout(0.5)  # a random layer among the frozen ones
    assert FrozenPrefix.split(model) is None
    model = build_model("resnet18", 3)
    freeze_stages(model, 2)
    model.bn1 = torch.nn.BatchNorm2d(64, affine=False)  # batch statistics in training, whatever is frozen
    assert FrozenPrefix.split(model) is None
    model = build_model("resnet18", 3)
    freeze_stages(model, 2)
    features = model.forward_features
    model.forward_features = lambda x: features(x) * 2  # forward() no longer runs the modules in order
    assert FrozenPrefix.split(model) is None


@pytest.mark.slow
def test_training_with_the_frozen_prefix_is_the_same_training(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mieruka.inference.CPU_PIXELS_PER_PASS", 4 * 64 * 64)  # each batch of 8 in two slices
    cfg = replace(TINY, freeze_stages=3, tta="none")
    sliced = train(synth_dir, tmp_path / "sliced", cfg, progress=False)
    monkeypatch.setattr(FrozenPrefix, "split", classmethod(lambda cls, model: None))
    whole = train(synth_dir, tmp_path / "whole", cfg, progress=False)
    keys = ("train_loss", "val_loss", "val_accuracy")
    assert [[h[k] for k in keys] for h in sliced.history] == [[h[k] for k in keys] for h in whole.history]


def test_mask_of_another_size_names_both_files(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    image = sorted((data / "crack").glob("*.png"))[0]
    mask = data / "masks" / "crack" / image.name
    Image.new("L", (10, 12)).save(mask)
    with pytest.raises(DataError) as err:
        train(data, tmp_path / "run", TINY, progress=False)
    message = str(err.value)
    assert str(image) in message and str(mask) in message and "10×12" in message and "64×64" in message
