"""The reliability rules, one test per rule: each case found by trying to break mieruka is an instance of a rule,
and the test holds the rule (not only the case)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from mieruka.cli import main


def _edited_onnx(src: Path, dst: Path, *, verdicts: bool = False, weight: bool = False, drop_digest: bool = False):
    proto = onnx.load(str(src))
    props = {p.key: p for p in proto.metadata_props}
    if verdicts:  # every class passes: in the plain key and in the description
        info = json.loads(props["info"].value)
        info["verdicts"] = dict.fromkeys(info["verdicts"], "OK")
        props["info"].value = json.dumps(info, ensure_ascii=False)
        props["verdicts"].value = json.dumps(info["verdicts"], ensure_ascii=False)
    if weight:
        init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        array = numpy_helper.to_array(init).copy()
        array.flat[0] += 1.0
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    if drop_digest:
        kept = [p for p in proto.metadata_props if p.key != "sha256"]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
    onnx.save_model(proto, str(dst))
    return dst


@pytest.mark.parametrize("edit", ["verdicts", "weight", "drop_digest"])
def test_rule1_an_altered_exported_file_is_refused_whatever_its_format(
    tiny_onnx: Path, synth_dir: Path, tmp_path: Path, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An .onnx whose verdicts were set to OK, whose weights or whose digest were edited after export: predict and
    serve exit 2 naming the file, before any work; the untouched file still predicts."""
    altered = _edited_onnx(tiny_onnx, tmp_path / "altered.onnx", **{edit: True})
    assert main(["predict", str(altered), str(synth_dir / "crack"), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "altered.onnx" in err and ("altered" in err.split("altered.onnx", 1)[1] or "no digest" in err)
    assert "Traceback" not in err and not (tmp_path / "p.csv").exists()
    assert main(["serve", str(altered), "--port", "1"]) == 2
    assert "altered.onnx" in capsys.readouterr().err
    assert (
        main(["predict", str(tiny_onnx), str(synth_dir / "crack"), "--out", str(tmp_path / "ok.csv"), "--quiet"]) == 0
    )


def test_rule1_an_altered_openvino_ir_is_refused(tiny_openvino: Path, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from mieruka.deploy.openvino import OpenVinoModel
    from mieruka.errors import CheckpointError

    xml = tiny_openvino  # read only: the altered copies go to tmp_path
    OpenVinoModel(xml)  # sealed and accepted
    model = ov.Core().read_model(str(xml))
    info = json.loads(model.get_rt_info(["mieruka", "info"]).astype(str))
    info["verdicts"] = dict.fromkeys(info["verdicts"], "OK")
    model.set_rt_info(json.dumps(info), ["mieruka", "info"])
    edited = tmp_path / "edited.xml"
    ov.save_model(model, str(edited), compress_to_fp16=False)
    with pytest.raises(CheckpointError, match=r"edited\.xml: the weights or the model description do not match"):
        OpenVinoModel(edited)
    weights = tmp_path / "w.xml"
    weights.write_bytes(xml.read_bytes())
    data = bytearray(xml.with_suffix(".bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.with_suffix(".bin").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their recorded digest"):
        OpenVinoModel(weights)


def test_rule2_a_tracker_that_cannot_record_is_refused_before_training(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", str(synth_dir), "--out", str(run), "--epochs", "1", "--image-size", "32", "--pretrained", "none"]
    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    assert main([*args, "--tracker", "mlflow", "--quiet"]) == 2
    assert "--tracker mlflow needs MLflow" in capsys.readouterr().err
    assert not (run / "model.safetensors").exists()
    monkeypatch.undo()
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    # MLflow itself is imported in a process of its own: its logging set-up outlives the test's capture
    env = {**os.environ, "MLFLOW_TRACKING_URI": (blocker / "mlruns").as_uri()}
    commands = [args, ["evaluate", str(tmp_path / "m.safetensors"), str(synth_dir), "--out", str(tmp_path / "e")]]
    script = (  # both commands in one process: MLflow is imported once
        "import json, sys; from mieruka.cli import main\n"
        "print(json.dumps([main([*c, '--tracker', 'mlflow', '--quiet']) for c in json.loads(sys.argv[1])]))"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [2, 2], done.stderr
    assert done.stderr.count("--tracker mlflow: MLFLOW_TRACKING_URI") == 2, done.stderr
    assert done.stderr.count("plain-file is a file, not a folder") == 2
    assert not (run / "model.safetensors").exists() and not (tmp_path / "e").exists()


def test_rule2_an_unreachable_ray_address_is_refused_in_bounded_time_naming_the_option(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from conftest import free_port

    model = str(tiny_run / "model.safetensors")
    for address, said in ((f"127.0.0.1:{free_port()}", "nothing answers at 127.0.0.1"),
                          (f"ray://127.0.0.1:{free_port()}", "nothing answers at 127.0.0.1"),
                          ("not a url", "give auto, HOST:PORT or ray://HOST:PORT")):  # fmt: skip
        t0 = time.monotonic()
        code = main(["predict", model, str(synth_dir), "--engine", "ray", "--ray-address", address, "--quiet",
                     "--out", str(tmp_path / "p.csv")])  # fmt: skip
        assert code == 2 and time.monotonic() - t0 < 15
        err = capsys.readouterr().err
        assert f"--ray-address {address}" in err.replace("'", "") and said in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("command", ["serve", "review"])
def test_rule2_a_taken_port_is_refused_before_anything_is_announced(
    tiny_onnx: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        target = str(tiny_onnx) if command == "serve" else str(tmp_path)
        assert main([command, target, "--port", str(number)]) == 2
    out, err = capsys.readouterr()
    assert f"--port {number}: cannot listen on 127.0.0.1:{number}" in err
    assert "http://" not in out


def test_rule3_no_output_is_replaced_unasked(
    tiny_run: Path, tiny_onnx: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_run / "model.safetensors")
    csv_out, onnx_out = tmp_path / "p.csv", tmp_path / "m.onnx"
    for path in (csv_out, onnx_out):
        path.write_bytes(b"precious")
    assert main(["predict", model, str(synth_dir / "crack"), "--out", str(csv_out), "--quiet"]) == 2
    assert "--out " in capsys.readouterr().err and csv_out.read_bytes() == b"precious"
    assert main(["export", model, "--out", str(onnx_out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and onnx_out.read_bytes() == b"precious"
    assert main(["predict", model, str(synth_dir / "crack"), "--out", str(csv_out), "--quiet", "--overwrite"]) == 0
    assert csv_out.read_text(encoding="utf-8").startswith("image,")


def test_rule3_a_run_that_stopped_before_training_does_not_block_the_retry_it_suggests(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    (data / "crack" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--epochs", "1", "--image-size", "32", "--pretrained", "none",
            "--explain-method", "gradcam", "--quiet"]  # fmt: skip
    assert main(args) == 2
    assert "--skip-bad" in capsys.readouterr().err and (run / "bad_images.csv").is_file()
    assert main([*args, "--skip-bad"]) == 0
    assert (run / "model.safetensors").is_file()
    assert main([*args, "--skip-bad"]) == 2  # a trained run is still never replaced unasked
    assert "--overwrite" in capsys.readouterr().err


def test_rule4_predict_resume_redoes_a_row_torn_mid_write(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """A kill or a full disk mid-row leaves a line without its end: resume drops it and does that image again, so
    every image has exactly one whole row."""
    import csv

    model, images = str(tiny_run / "model.safetensors"), str(synth_dir / "crack")
    out = tmp_path / "p.csv"
    assert main(["predict", model, images, "--out", str(out), "--quiet"]) == 0
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # 3 rows, the 4th torn
    assert main(["predict", model, images, "--out", str(out), "--resume", "--quiet"]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(tmp_path / "full.csv", "wb") as fh:
        fh.write(whole)
    with open(tmp_path / "full.csv", newline="", encoding="utf-8") as fh:
        expected = list(csv.DictReader(fh))
    assert len(rows) == len(expected) == len(list((synth_dir / "crack").glob("*.png")))
    assert sorted(r["image"] for r in rows) == sorted(r["image"] for r in expected)
    assert {r["image"]: r["class"] for r in rows} == {r["image"]: r["class"] for r in expected}


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_rule5_the_bit_depth_rule_applies_to_colour_as_to_gray(tmp_path: Path, fmt: str) -> None:
    """The same 12-bit data as 48-bit colour and as 16-bit gray read alike with --bit-depth 12, and check reports
    16 bits for both."""
    import numpy as np
    from PIL import Image

    from mieruka.data.doctor import _describe_image
    from mieruka.data.images import read_image

    y, x = np.mgrid[0:24, 0:32]
    twelve = ((x * 131 + y * 17) % 4096).astype(np.uint16)  # (H, W), 0..4095
    colour = np.stack([twelve, twelve, twelve], -1)
    gray_path = tmp_path / "gray.png"
    Image.fromarray(twelve).save(gray_path)  # 16-bit gray
    colour_path = tmp_path / f"colour.{fmt}"
    if fmt == "png":
        _write_png48(colour_path, colour)
    else:
        _write_tiff48(colour_path, colour)
    gray = read_image(gray_path, bit_depth=12)
    rgb = read_image(colour_path, bit_depth=12)
    assert gray.max() == 255 and np.array_equal(rgb, gray)
    np.testing.assert_array_equal(read_image(colour_path)[..., 0], read_image(gray_path)[..., 0])
    assert _describe_image(colour_path)["bits"] == 16 and _describe_image(gray_path)["bits"] == 16


def _write_png48(path: Path, rgb: object) -> None:
    """A 48-bit PNG written by hand (Pillow cannot write one), rows with the Sub and Up filters."""
    import struct
    import zlib

    import numpy as np

    data = np.asarray(rgb).astype(">u2")
    h, w, _ = data.shape
    rows, previous = [], np.zeros(w * 6, np.uint8)
    for yy in range(h):
        raw = np.frombuffer(data[yy].tobytes(), np.uint8)
        if yy % 2:  # Up
            rows.append(b"\x02" + ((raw.astype(int) - previous) % 256).astype(np.uint8).tobytes())
        else:  # Sub (6 bytes per pixel)
            left = np.concatenate([np.zeros(6, np.uint8), raw[:-6]])
            rows.append(b"\x01" + ((raw.astype(int) - left) % 256).astype(np.uint8).tobytes())
        previous = raw

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))  # fmt: skip


def _write_tiff48(path: Path, rgb: object) -> None:
    """An uncompressed 48-bit TIFF (tifffile writes it as photographers' tools do)."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(path, rgb, photometric="rgb")


def test_rule6_a_fault_of_the_model_file_names_the_model_file(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from mieruka.checkpoint import load_checkpoint, save_checkpoint

    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    odd = save_checkpoint(tmp_path / "odd.safetensors", model, replace(info, explain_method="gradcam:no.such.layer"))
    for command in (["explain", str(odd), str(synth_dir), "--out", str(tmp_path / "x"), "--quiet"],
                    ["predict", str(odd), str(synth_dir / "crack"), "--quiet"]):  # fmt: skip
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "odd.safetensors: the model description explain_method names 'no.such.layer'" in err
        assert "--layer" not in err


def test_rule7_every_documented_layout_trains_mvtec_too(synth_dir: Path, tmp_path: Path) -> None:
    """An MVTec-shaped category (good images only under train/) trains: its defect types' test images are split
    into train / val / test by the layout's seeded rule, and evaluate reads the same split from the stored layout."""
    import shutil

    root = tmp_path / "category"
    for kind, source in (("good", "good"), ("crack", "crack"), ("scratch", "blowhole")):
        images = sorted((synth_dir / source).glob("*.png"))
        for n, image in enumerate(images):
            where = root / "train" / "good" if kind == "good" and n < 4 else root / "test" / kind
            where.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, where / image.name)
            mask = synth_dir / "masks" / source / image.name
            if kind != "good" and mask.is_file():
                (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, root / "ground_truth" / kind / f"{image.stem}_mask.png")
    run = tmp_path / "run"
    assert main(["train", str(root), "--out", str(run), "--epochs", "1", "--image-size", "64", "--pretrained",
                 "none", "--quiet"]) == 0  # fmt: skip
    split = (run / "split.csv").read_text(encoding="utf-8")
    trained = [line for line in split.splitlines() if line.endswith(",train")]
    assert {line.split(",")[1] for line in trained} == {"good", "crack", "scratch"}
    model = str(run / "model.safetensors")
    assert main(["evaluate", model, str(root), "--out", str(tmp_path / "e"), "--quiet"]) == 0
    # every command reads the category as the model does
    assert main(["explain", model, str(root), "--split", "test", "--out", str(tmp_path / "x"), "--quiet"]) == 0
    assert main(["audit", model, str(root), "--split", "test", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["check", str(root), "--out", str(tmp_path / "c"), "--no-near"]) == 0
    tested = json.loads((tmp_path / "e" / "metrics.json").read_text(encoding="utf-8"))["images"]
    explained = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))["images"]
    assert len(explained) == tested == sum(1 for line in split.splitlines() if line.endswith(",test"))


def test_rule4_train_resume_keeps_the_run_split_or_names_what_changed(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--image-size", "32", "--pretrained", "none", "--explain-method",
            "gradcam", "--guide", "none", "--quiet"]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    split_before = (run / "split.csv").read_bytes()
    removed = sorted((data / "crack").glob("*.png"))[:2]
    for image in removed:
        image.unlink()
    assert main([*args, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: the data differ from the split" in err and f"{removed[0].name} (removed)" in err
    assert (run / "split.csv").read_bytes() == split_before  # the run's split is not rewritten


def test_rule5_box_files_are_read_like_every_other_user_file(tmp_path: Path) -> None:
    """YOLO and COCO files saved with a byte-order mark read; one in another encoding is refused naming it."""
    from mieruka.data.annotations import read_coco, read_yolo
    from mieruka.errors import DataError

    yolo = tmp_path / "a.txt"
    yolo.write_bytes(b"\xef\xbb\xbf" + b"0 0.5 0.5 0.2 0.4\n")
    (box,) = read_yolo(yolo, (100, 200))
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((80, 30, 120, 70))
    coco = tmp_path / "c.json"
    entry = {"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100}],
             "annotations": [{"image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 1}],
             "categories": [{"id": 1, "name": "傷"}]}  # fmt: skip
    coco.write_bytes(b"\xef\xbb\xbf" + json.dumps(entry, ensure_ascii=False).encode("utf-8"))
    assert read_coco(coco, tmp_path / "a.png")[1][0].label == "傷"
    sjis = tmp_path / "sjis.json"
    sjis.write_bytes(json.dumps(entry, ensure_ascii=False).encode("shift_jis"))
    with pytest.raises(DataError, match=r"sjis\.json: the COCO JSON file is not UTF-8 text"):
        read_coco(sjis, tmp_path / "a.png")
