"""fp16 and int8 graphs: written only when they pass their checks against float32, and run by predict."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from mieruka.cli import main
from mieruka.deploy.precision import TOLERANCES, PrecisionCheck, _pearson, compare, convert
from mieruka.errors import MierukaError
from mieruka.export import export_onnx
from mieruka.predict import predict
from mieruka.runtime import OnnxModel

pytestmark = pytest.mark.slow


def test_int8_export_on_synth_data_and_predict(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The interface: export --precision int8 --calib DATA succeeds on synth data, and predict runs the file; its
    classes agree with the float32 file's on the data set's images."""
    out = tmp_path / "int8.onnx"
    main(["export", str(tiny_run / "model.safetensors"), "--precision", "int8", "--calib", str(synth_dir),
          "--out", str(out), "--calib-images", "48"])  # fmt: skip
    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["precision"] == "int8" and meta["format"] == "mieruka.onnx"
    assert not list(tmp_path.glob(".int8.onnx*"))  # no temporary left behind
    low = predict(out, [synth_dir], progress=False)
    ref = predict(tiny_run / "model.safetensors", [synth_dir], progress=False)
    assert len(low) == len(ref) > 0
    agree = np.mean([a.label == b.label for a, b in zip(low, ref, strict=True)])
    assert agree >= TOLERANCES["int8"].agreement
    assert max(abs(a.probability - b.probability) for a, b in zip(low, ref, strict=True)) < 0.3


def test_fp16_export_is_close_to_fp32(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "half.onnx"
    result = export_onnx(tiny_run / "model.safetensors", out, precision="fp16")
    assert result.check is not None and result.precision == "fp16"
    assert result.check.mean_prob_diff <= 1e-3 and result.check.agreement == 1.0
    assert result.check.heatmap_corr is not None and result.check.heatmap_corr > 0.99
    types = {i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("f4")
    probs, heat = OnnxModel(out).run(x)  # float32 in and out
    assert probs.dtype == np.float32 and heat is not None and heat.shape == (2, 64, 64)


def test_int8_needs_calibration_data(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(MierukaError, match="--calib"):
        export_onnx(tiny_run / "model.safetensors", tmp_path / "q.onnx", precision="int8")
    assert not (tmp_path / "q.onnx").exists()


def test_a_missed_check_writes_nothing_and_names_the_check(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tolerance no int8 graph meets, the command fails, says which check missed, and leaves no file."""
    import mieruka.deploy.precision as precision

    monkeypatch.setitem(precision.TOLERANCES, "int8", replace(TOLERANCES["int8"], heatmap_corr=1.01))
    out = tmp_path / "q.onnx"
    out.write_bytes(b"an older file")
    with pytest.raises(MierukaError, match="heatmap correlation"):
        export_onnx(tiny_run / "model.safetensors", out, precision="int8", calib=synth_dir, calib_images=16)
    assert out.read_bytes() == b"an older file"  # the file at --out is only replaced by a graph that passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_check_measures_what_it_says(tiny_onnx: Path, tmp_path: Path) -> None:
    """A graph compared with itself: no difference, full agreement, correlation 1; the failure list reads each
    tolerance."""
    x = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype("f4")
    same = compare(tiny_onnx, tiny_onnx, "int8", x, batch=2)
    assert same.images == 5 and same.mean_prob_diff == 0.0 and same.agreement == 1.0
    assert same.heatmap_corr == pytest.approx(1.0) and same.failures() == []
    bad = PrecisionCheck("int8", 10, mean_prob_diff=0.5, max_prob_diff=0.9, agreement=0.5, heatmap_corr=0.2)
    assert len(bad.failures()) == 3
    a = np.arange(16.0).reshape(4, 4)
    assert _pearson(a, 2 * a + 1) == pytest.approx(1.0) and _pearson(a, -a) == pytest.approx(-1.0)
    assert _pearson(np.ones((2, 2)), np.ones((2, 2))) == 1.0


def test_convert_refuses_unknown_precision(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(MierukaError, match="--precision"):
        convert(tiny_onnx, tmp_path / "x.onnx", "int4", None)
    with pytest.raises(MierukaError, match="--calib"):
        convert(tiny_onnx, tmp_path / "x.onnx", "int8", None)
