from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mieruka.cli import build_parser, main

COMMANDS = [a for a in build_parser()._subparsers._group_actions[0].choices]  # type: ignore[union-attr]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "mieruka", "--help"], capture_output=True, text=True, check=True)
    assert "synth" in out.stdout and "train" in out.stdout and "evaluate" in out.stdout


def test_errors_are_one_paragraph_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "missing.safetensors"), str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors: model file not found" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "nodata"), "--out", str(tmp_path / "run")]) == 2
    assert "nodata: no such folder" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--arch", "nonet"]) == 2
    assert "--arch 'nonet'" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "info", str(tmp_path / "none.safetensors")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_synth_info_and_predict_commands(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["synth", str(tmp_path / "s"), "--per-class", "2", "--size", "32", "--names", "ja", "--quiet"]) == 0
    assert (tmp_path / "s" / "欠陥(割れ)" / "crack_0001.png").is_file()
    assert "wrote 12 images of 6 classes" in capsys.readouterr().out
    assert main(["info", str(tiny_run / "model.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "tf_efficientnet_lite0" and len(info["classes"]) == 6
    assert main(["predict", str(tiny_run / "model.safetensors"), str(synth_dir / "crack"), "--quiet"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0] == "image\tclass\tprobability\tP(NG)\tverdict\terror" and len(lines) == 1 + 8  # header, 8 images
    assert "NG when the predicted class is NG or P(NG) >= " in out.err and "(the model's)" in out.err


def test_config_file_and_unicode_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "データ"
    assert main(["synth", str(data), "--per-class", "5", "--size", "32", "--names", "ja", "--quiet"]) == 0
    config = tmp_path / "options.toml"
    config.write_text(
        'pretrained = "none"\nimage_size = 32\nepochs = 3\nbatch_size = 8\nfreeze_stages = 0\n'
        'ok_classes = ["良品", "正常(キズ)"]\n[augment]\ncontrast = 0.15\n',
        encoding="utf-8",
    )
    run = tmp_path / "実行"
    # the command line wins over the file: 1 epoch, not 3
    assert main(["train", str(data), "--out", str(run), "--config", str(config), "--epochs", "1", "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]
    assert saved["epochs"] == 1 and saved["image_size"] == 32 and saved["ok_classes"] == ["良品", "正常(キズ)"]
    # the README's way to narrow the exposure jitter: one field of the table changes, the others keep their defaults
    assert saved["augment"]["contrast"] == 0.15 and saved["augment"]["brightness"] == 0.3
    assert (
        main(["evaluate", str(run / "model.safetensors"), str(data), "--out", str(tmp_path / "評価"), "--quiet"]) == 0
    )
    metrics = json.loads((tmp_path / "評価" / "metrics.json").read_text(encoding="utf-8"))
    assert "欠陥(割れ)" in metrics["classes"]
    printed = capsys.readouterr().out
    assert f"OK/NG gate (class NG, or P(NG) >= {metrics['threshold']:.4f}, chosen on val" in printed
    assert "95 % upper bound" in printed
    # 正常(汚れ) is not among the --ok classes of the file, so it is NG here
    assert metrics["verdicts"] == {c: ("OK" if c in ("良品", "正常(キズ)") else "NG") for c in metrics["classes"]}
    assert "欠陥(巣穴)" in (tmp_path / "評価" / "predictions.csv").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(run), "--config", str(tmp_path / "none.toml")]) == 2
    assert "--config" in capsys.readouterr().err
    config.write_text("epoch = 3\n")
    assert main(["train", str(data), "--out", str(run), "--config", str(config)]) == 2
    assert "unknown training option(s): epoch" in capsys.readouterr().err


def test_evaluate_neighbors_from_the_command_line(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(tiny_run / "model.safetensors"), str(synth_dir), "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--neighbors", "3"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"nearest training images: {tmp_path / 'neighbors.csv'}")
    assert f"of {m['neighbors']['errors']} misclassified images" in line
    assert len((tmp_path / "neighbors.csv").read_text(encoding="utf-8").splitlines()) == 1 + 3 * m["images"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--neighbors", "-2"])
    assert exit_.value.code == 2 and "argument --neighbors: -2 is less than 0" in capsys.readouterr().err
