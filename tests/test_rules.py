"""The reliability rules, one test per rule: each case found by trying to break mieruka is an instance of a rule,
and the test holds the rule (not only the case)."""

from __future__ import annotations

import json
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
    assert main(["predict", str(tiny_onnx), str(synth_dir / "crack"), "--out", str(tmp_path / "ok.csv"), "--quiet"]) == 0


def test_rule1_an_altered_openvino_ir_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from mieruka.deploy.openvino import OpenVinoModel
    from mieruka.errors import CheckpointError

    xml = tmp_path / "m.xml"
    assert main(["export", str(tiny_run / "model.safetensors"), "--format", "openvino", "--out", str(xml)]) == 0
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
