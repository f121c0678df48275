"""Bad input and bad options never give a Python traceback: every subcommand, a set of bad arguments, exit 2 and a
message that names the option or file at fault."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from mieruka.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def _bad_arguments(tmp: Path, model: Path, data: Path) -> dict[str, list[tuple[list[str], str]]]:
    missing = str(tmp / "missing.safetensors")
    return {
        "synth": [([str(tmp / "s"), "--per-class", "0"], "--per-class"), ([str(tmp / "s"), "--size", "x"], "--size")],
        "check": [
            ([str(tmp / "nothing")], "nothing: no such folder"),
            ([str(data), "--near-threshold", "2"], "--near-threshold"),
            ([str(data), "--layout", "weird"], "--layout"),
            ([str(data), "--layout", "mvtec"], "an MVTec AD category has train/good/"),
        ],
        "train": [
            ([str(tmp / "nodata"), "--out", str(tmp / "r")], "nodata: no such folder"),
            ([str(data), "--out", str(tmp / "r"), "--epochs", "0"], "--epochs must be at least 1"),
            ([str(data), "--out", str(tmp / "r"), "--image-size", "big"], "--image-size"),
            ([str(data), "--out", str(tmp / "r"), "--arch", "nonet"], "--arch 'nonet'"),
            ([str(data), "--out", str(tmp / "r"), "--bit-depth", "11"], "--bit-depth"),
            ([str(data), "--out", str(tmp / "r"), "--resume"], "holds no interrupted run"),
            ([str(data), "--out", str(tmp / "r"), "--cache", "swap"], "--cache"),
            ([str(data), "--out", str(tmp / "r"), "--corrections", missing], "no such decisions file"),
            ([str(data), "--out", str(tmp / "r"), "--layout", "split-first"], "not a split folder"),
            ([str(data), "--out", str(tmp / "r"), "--add-records", "sqlite:///x.db"], "needs --corrections"),
        ],
        "evaluate": [
            ([missing, str(data), "--out", str(tmp / "e")], "missing.safetensors: model file not found"),
            ([str(model), str(data), "--out", str(tmp / "e"), "--max-escape", "2"], "--max-escape"),
            ([str(model), str(data), "--out", str(tmp / "e"), "--split", "dev"], "--split"),
        ],
        "predict": [
            ([str(model), str(tmp / "nothing")], "nothing: no such file or folder"),
            ([str(model), str(data), "--threshold", "1.5"], "--threshold"),
            ([str(model)], "give the model and at least one image"),
            ([str(model), str(data), "--workers", "2"], "need --engine ray"),
            ([str(model), str(data), "--engine", "ray", "--workers", "0"], "--workers"),
            ([str(model), str(data), "--engine", "spark"], "--engine"),
            ([str(model), str(data), "--decode", "gpu"], "--decode"),
            ([str(model), str(data), "--provider", "tpu"], "--provider"),
            ([str(model), str(data), "--provider", "openvino"], "--provider openvino: runs .onnx files only"),
        ],
        "export": [
            ([str(model), "--out", str(tmp / "m.onnx"), "--opset", "5"], "--opset 5: choose an opset from 18"),
            ([missing, "--out", str(tmp / "m.onnx")], "model file not found"),
            ([str(model), "--out", str(tmp / "m.onnx"), "--precision", "int8"], "--precision int8 needs --calib"),
            ([str(model), "--out", str(tmp / "m.onnx"), "--precision", "int4"], "--precision"),
            ([str(model), "--out", str(tmp / "m.onnx"), "--format", "openvino"], "written as NAME.xml"),
            ([str(model), "--out", str(tmp / "m.onnx"), "--calib-images", "0"], "--calib-images"),
            (
                [str(model), "--out", str(tmp / "m.onnx"), "--precision", "int8", "--calib", str(tmp / "no")],
                "no: no such folder",
            ),
        ],
        "serve": [
            ([str(model), "--port", "70000"], "--port"),
            ([str(model), "--max-upload-mb", "-1"], "--max-upload-mb"),
            ([missing], "model file not found"),
            ([str(model), "--provider", "tpu"], "--provider"),
            ([str(model), "--keep", "some"], "--keep"),
            ([str(model), "--record", "mysql://x/y"], "--record mysql://x/y"),
        ],
        "records": [
            ([f"sqlite:///{tmp / 'none.db'}", "--out", str(tmp / "r.csv")], "none.db: no such record"),
            ([f"sqlite:///{tmp / 'none.db'}", "--out", str(tmp / "r.txt")], "give a .csv or .parquet file"),
            ([f"sqlite:///{tmp / 'none.db'}", "--since", "soon", "--out", str(tmp / "r.csv")], "--since 'soon'"),
            (["postgresql://line@127.0.0.1:1/records", "--out", str(tmp / "r.csv")], "cannot open the record"),
        ],
        "monitor": [
            ([f"sqlite:///{tmp / 'none.db'}"], "none.db: no such record"),
            ([f"sqlite:///{tmp / 'none.db'}", "--window", "1"], "--window"),
        ],
        "flag": [
            ([f"sqlite:///{tmp / 'none.db'}", "--part", "P1"], "none.db: no such record"),
            ([f"sqlite:///{tmp / 'none.db'}"], "one of the arguments --part --id is required"),
            ([f"sqlite:///{tmp / 'none.db'}", "--id", "0"], "--id"),
            ([f"sqlite:///{tmp / 'none.db'}", "--part", "P1", "--kind", "maybe"], "--kind"),
        ],
        "explain": [
            ([str(model), str(data), "--out", str(tmp / "x"), "--alpha", "3"], "--alpha"),
            ([str(model), str(data), "--out", str(tmp / "x"), "--batch-size", "0"], "--batch-size"),
            ([str(model), str(data), "--out", str(tmp / "x"), "--layer", "nolayer"], "--layer nolayer"),
        ],
        "audit": [
            ([str(model), str(data), "--out", str(tmp / "a"), "--method", "gradcan"], "unknown method 'gradcan'"),
            ([str(model), str(data), "--out", str(tmp / "a"), "--map-threshold", "0"], "--map-threshold"),
            ([str(model), str(data), "--out", str(tmp / "a"), "--boxes", str(tmp / "none")], "--boxes"),
        ],
        "report": [([str(tmp)], "not a complete audit folder")],
        "review": [
            ([str(tmp)], "not an audit folder with a report"),
            ([str(tmp), "--port", "0"], "--port"),
            ([], "give the AUDIT_DIR to review, or --records URL"),
            (["--records", f"sqlite:///{tmp / 'none.db'}"], "none.db: no such record"),
        ],
        "info": [([missing], "model file not found"), ([str(data / "good" / "good_0000.png")], "not a readable")],
        "archs": [(["--no-such-flag"], "unrecognized arguments")],
        "methods": [(["extra"], "unrecognized arguments")],
    }


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)


def test_every_subcommand_refuses_bad_arguments_without_a_traceback(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_arguments(tmp_path, tiny_run / "model.safetensors", synth_dir)
    assert set(cases) == set(COMMANDS), "every subcommand needs its bad-argument cases"
    for command, bad in cases.items():
        for args, needle in bad:
            status = _run([command, *args])
            out = capsys.readouterr()
            text = out.out + out.err
            assert status == 2, (command, args, text)
            assert "Traceback" not in text, (command, args, text)
            assert needle in text, (command, args, text)


def test_config_values_of_the_wrong_type_name_the_key(synth_dir: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": "many"}))
    assert _run(["train", str(synth_dir), "--out", str(tmp_path / "r"), "--config", str(config)]) == 2
    assert "epochs: expected a whole number, got 'many'" in capsys.readouterr().err
    config.write_text(json.dumps({"augment": {"contrast": "wide"}}))
    assert _run(["train", str(synth_dir), "--out", str(tmp_path / "r"), "--config", str(config)]) == 2
    assert "augment.contrast: expected a number, got 'wide'" in capsys.readouterr().err


def test_explain_finds_data_sets_whatever_the_unicode_form_and_names_foreign_classes(tmp_path: Path) -> None:
    from mieruka.checkpoint import ModelInfo
    from mieruka.explain.inputs import _is_dataset

    info = ModelInfo("resnet18", ("ガラス", "good"), {"ガラス": "NG", "good": "OK"}, 64, (0.5,) * 3, (0.5,) * 3, "x")
    data = tmp_path / "data"
    (data / unicodedata.normalize("NFD", "ガラス")).mkdir(parents=True)
    (data / "good").mkdir()
    (data / "masks").mkdir()
    assert _is_dataset(data, info, need_labels=True)
    other = tmp_path / "other"
    (other / "crack").mkdir(parents=True)
    (other / "good").mkdir()
    from mieruka.errors import DataError

    with pytest.raises(DataError, match=r"class folders crack are not classes of the model \(ガラス, good\)"):
        _is_dataset(other, info, need_labels=True)
    assert not _is_dataset(other, info, need_labels=False)  # --target pred: a folder of images


def test_predict_on_a_data_folder_does_not_classify_its_masks(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    from mieruka.predict import collect_images

    found = collect_images([synth_dir])
    assert len(found) == 48 and not any("masks" in p.parts for p in found)
    # a folder of images that happens to be called masks, named directly, is still read
    assert len(collect_images([synth_dir / "masks" / "crack"])) == 8


def test_audit_boxes_that_match_nothing_are_an_error_and_partial_ones_are_counted(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys
) -> None:
    from mieruka.audit.run import run_audit
    from mieruka.errors import DataError

    empty = tmp_path / "boxes"
    empty.mkdir()
    with pytest.raises(DataError, match="no entry matches any of the 12 images"):
        run_audit(tiny_run / "model.safetensors", synth_dir, tmp_path / "a", boxes=empty, report=False, progress=False)
    crack = sorted((synth_dir / "crack").glob("*.png"))
    test_images = [p for p in crack if p.stem in ("crack_0002", "crack_0005", "crack_0006", "crack_0007")]
    for image in test_images:
        (empty / f"{image.stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    run = run_audit(
        tiny_run / "model.safetensors", synth_dir, tmp_path / "a", boxes=empty, report=False, progress=False
    )
    regions = run.summary.regions
    assert regions.images == 12 and regions.matched == regions.with_region >= 1
    assert regions.ng_without_region == 6 - regions.with_region
    out = capsys.readouterr()
    assert f"--boxes: {regions.with_region} of 12 images have a region" in out.out
    assert f"warning: {regions.ng_without_region} image(s) of NG classes have no region" in out.err


def test_class_tables_line_up_japanese_names() -> None:
    from mieruka._text import display_width, ljust
    from mieruka.data.dataset import Dataset, describe
    from mieruka.data.sample import Sample

    assert display_width("欠陥(割れ)") == 10 and display_width("good") == 4
    samples = tuple(Sample(Path(f"{i}.png"), c, "NG", None, "train") for i, c in enumerate(("欠陥(割れ)", "good")))
    table = describe(Dataset(Path("."), ("欠陥(割れ)", "good"), {"欠陥(割れ)": "NG", "good": "OK"}, samples))
    columns = {display_width(line[: line.index(v)]) for line in table.splitlines() for v in ("NG", "OK") if v in line}
    assert len(columns) == 1  # the verdict column starts at one display column on every row
    assert ljust("欠陥", 6) == "欠陥  "
