from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY
from PIL import Image

import mieruka.train as train_module
from mieruka.checkpoint import load_checkpoint
from mieruka.errors import DataError
from mieruka.models import build_model
from mieruka.train import _freeze_stages, train


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
    original = train_module._optimizer_tensors

    def die_in_second_epoch(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after epoch 2's model file, before its resume state
        return original(opt)

    cut = tmp_path / "cut"
    monkeypatch.setattr(train_module, "_optimizer_tensors", die_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(synth_dir, cut, cfg, progress=False)
    monkeypatch.setattr(train_module, "_optimizer_tensors", original)
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
    frozen = _freeze_stages(model, 2)
    assert frozen[0] == "conv_stem.weight" and all(not n.startswith("blocks.2") for n in frozen)
    assert any(n.startswith("blocks.1") for n in frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable[0].startswith("blocks.2.") and "classifier.weight" in trainable


def test_mask_of_another_size_names_both_files(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    image = sorted((data / "crack").glob("*.png"))[0]
    mask = data / "masks" / "crack" / image.name
    Image.new("L", (10, 12)).save(mask)
    with pytest.raises(DataError) as err:
        train(data, tmp_path / "run", TINY, progress=False)
    message = str(err.value)
    assert str(image) in message and str(mask) in message and "10×12" in message and "64×64" in message
