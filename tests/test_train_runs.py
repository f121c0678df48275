"""The run folder and the data a run may start from: refusals that name what is wrong (train/runs.py, inputs.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY

from mieruka.config import TrainConfig
from mieruka.data.dataset import load_dataset
from mieruka.errors import DataError, MierukaError
from mieruka.train import train

ONE = replace(TINY, epochs=1, tta="none")


def _copy(src: Path, dst: Path, classes: tuple[str, ...] | None = None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("masks", "*.csv"))
    if classes is not None:
        for folder in dst.iterdir():
            if folder.name not in classes:
                shutil.rmtree(folder)
    return dst


def test_one_class_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path / "data", ("good",))
    with pytest.raises(DataError, match=r"only one class \(good\); a classifier needs at least two"):
        train(data, tmp_path / "run", ONE, progress=False)


def test_skipping_every_image_of_a_class_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path / "data")
    for image in (data / "crack").iterdir():
        image.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"crack have no training image after skipping the unusable images"):
        train(data, tmp_path / "run", replace(ONE, skip_bad=True), progress=False)


def test_skipped_images_leave_the_split_table_and_split_csv(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _copy(synth_dir, tmp_path / "data")
    split = load_dataset(data, split_seed=ONE.split_seed)
    broken = next(s for s in split.split("train") if s.label == "crack").image
    broken.write_bytes(b"")
    run = tmp_path / "run"
    train(data, run, replace(ONE, skip_bad=True), progress=False)
    out = capsys.readouterr().out
    crack_row = next(line for line in out.splitlines() if line.startswith("crack "))
    assert crack_row.split()[2:] == ["3", "2", "2"]  # 4 training images less the broken one
    listed = (run / "split.csv").read_text(encoding="utf-8")
    assert broken.name not in listed and listed.count("\n") == 1 + 48 - 1


def test_an_existing_run_is_not_overwritten_by_accident(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(synth_dir, run, ONE, progress=False)
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(MierukaError, match=r"already holds files .*--resume .*--overwrite"):
        train(synth_dir, run, ONE, progress=False)
    assert (run / "model.safetensors").read_bytes() == before
    train(synth_dir, run, replace(ONE, seed=1), overwrite=True, progress=False)
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 1
    with pytest.raises(MierukaError, match="choose one"):
        train(synth_dir, run, ONE, resume=True, overwrite=True, progress=False)


def test_resume_refuses_other_options_and_extends_a_longer_run(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    two = replace(ONE, epochs=2)
    train(synth_dir, run, two, progress=False)
    with pytest.raises(MierukaError) as err:
        train(synth_dir, run, replace(two, image_size=32, lr=0.01), resume=True, progress=False)
    message = str(err.value)
    assert "--image-size 64 in the run, 32 now" in message and "--lr" in message and "--epochs" not in message
    with pytest.raises(MierukaError, match=r"--epochs 2 in the run, 1 now \(a run can be extended, not cut\)"):
        train(synth_dir, run, ONE, resume=True, progress=False)
    capsys.readouterr()
    result = train(synth_dir, run, replace(two, epochs=3, device="cpu"), resume=True, progress=False)
    assert "extending" in capsys.readouterr().out and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 3


def test_resume_on_other_classes_names_them_and_keeps_the_run(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(synth_dir, run, ONE, progress=False)
    config = (run / "config.json").read_text()
    other = _copy(synth_dir, tmp_path / "other", ("good", "crack", "scratch"))
    with pytest.raises(DataError, match=r"trained on the classes blowhole, crack, .* but .* has crack, good, scratch"):
        train(other, run, resume=True, progress=False)
    assert (run / "config.json").read_text() == config  # nothing of the run was rewritten


def test_split_csv_works_from_another_working_directory(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy(synth_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    train("data", "run", ONE, progress=False)  # relative paths, as a user types them
    monkeypatch.chdir(tmp_path / "run")
    again = load_dataset(tmp_path / "run" / "split.csv")
    assert len(again.samples) == 48 and all(s.image.is_file() for s in again.samples)


def test_training_writes_its_model_once_and_complete(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.safetensors is written once, at the end, with its threshold, test-time views and the method chosen on
    the validation regions; the epochs write the best weights to best.safetensors."""
    import mieruka.checkpoint as checkpoint

    written: list[str] = []
    real = checkpoint.atomic_write

    def counted(path, fn):  # type: ignore[no-untyped-def]
        written.append(Path(path).name)
        return real(path, fn)

    monkeypatch.setattr(checkpoint, "atomic_write", counted)
    cfg = TrainConfig(pretrained="none", image_size=64, epochs=2, batch_size=8, explain_method="auto")
    train(synth_dir, tmp_path / "run", cfg, progress=False)
    assert written.count("model.safetensors") == 1 and written.count("best.safetensors") >= 1
    info = checkpoint.read_info(tmp_path / "run" / "model.safetensors")
    assert info.method_selection["scope"] == "auto" and info.explain_method == info.method_selection["chosen"]
    assert info.ng_threshold is not None and info.tta in ("none", "flip", "d4")
