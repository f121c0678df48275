from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mieruka.checkpoint import load_checkpoint
from mieruka.cli import main
from mieruka.data.images import read_image
from mieruka.errors import CheckpointError, MierukaError
from mieruka.explain.engine import explain
from mieruka.explain.graph import EXPORT_METHODS, ExplainedModel
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.targets import ClassTarget
from mieruka.export import export_model
from mieruka.model_file import TorchModel
from mieruka.predict import predict
from mieruka.runtime import OnnxModel, prepare


def _images(synth_dir: Path, n: int) -> list[np.ndarray]:
    paths = sorted(synth_dir.glob("*/*.png"))[:: max(1, len(sorted(synth_dir.glob("*/*.png"))) // n)][:n]
    return [read_image(p) for p in paths]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "xgradcam"])
def test_graph_equals_the_engine(tiny_run: Path, synth_dir: Path, method: str) -> None:
    """The exported computation is the engine's map of the predicted class, min–max scaled per image."""
    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    x = torch.from_numpy(prepare(_images(synth_dir, 5), info))
    wrapped = ExplainedModel(model, method, all_classes=True)
    assert wrapped.has_heatmap
    with torch.inference_mode():
        probs, heat, heats = wrapped(x)
    ref = explain(model, x, method=method, targets="all")
    assert torch.allclose(probs, ref.probs, atol=1e-6)
    assert torch.allclose(heats, normalize_for_display(ref.maps), atol=1e-5)
    pred = ref.probs.argmax(1)
    assert torch.allclose(heat, heats[torch.arange(5), pred], atol=0)
    single = ExplainedModel(model, method)
    with torch.inference_mode():
        _, heat1 = single(x)
    ref1 = explain(model, x, method=method, targets=[ClassTarget(int(c)) for c in pred][:1])
    assert torch.allclose(heat1[0], normalize_for_display(ref1.maps[0, 0]), atol=1e-5)
    assert torch.allclose(heat1, heat, atol=1e-5)
    assert float(heat.amin(dim=(1, 2)).max()) == 0.0 and float(heat.amax(dim=(1, 2)).min()) == pytest.approx(1.0)


def test_onnx_runtime_matches_pytorch(tiny_run: Path, tiny_onnx: Path, synth_dir: Path) -> None:
    """Probabilities within 1e-4 and maps within 1e-3, for batch sizes 1 and 7 (the batch axis is dynamic)."""
    onnx_model = OnnxModel(tiny_onnx)
    torch_model = TorchModel(tiny_run / "model.safetensors")
    for n in (1, 7):
        x = prepare(_images(synth_dir, n), onnx_model.info)
        p_onnx, h_onnx = onnx_model.run(x)
        p_torch, h_torch = torch_model.run(x)
        assert p_onnx.shape == (n, len(onnx_model.info.classes))
        assert h_onnx is not None and h_torch is not None
        assert h_onnx.shape == (n, onnx_model.info.image_size, onnx_model.info.image_size)
        assert np.abs(p_onnx - p_torch).max() <= 1e-4
        assert np.abs(h_onnx - h_torch).max() <= 1e-3
        np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-5)


def test_the_file_describes_itself(tiny_run: Path, tiny_onnx: Path) -> None:
    _, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    m = OnnxModel(tiny_onnx)
    assert m.info == info
    assert m.method == "gradcam" and m.outputs == ("probabilities", "heatmap")
    props = {p.key: p.value for p in onnx.load(str(tiny_onnx), load_external_data=False).metadata_props}
    assert json.loads(props["classes"]) == list(info.classes)
    assert json.loads(props["verdicts"]) == info.verdicts
    assert int(props["image_size"]) == info.image_size
    assert json.loads(props["mean"]) == list(info.mean) and json.loads(props["std"]) == list(info.std)
    # one self-contained file: no external tensor data
    assert not list(tiny_onnx.parent.glob("*.data"))
    inputs = m.session.get_inputs()
    assert inputs[0].name == "image" and not isinstance(inputs[0].shape[0], int)  # dynamic batch


def test_head_without_closed_form_exports_probabilities_only(tiny_run: Path, tmp_path: Path) -> None:
    """A max-pooling head has no closed-form gradient: the graph gives probabilities only, and says so."""
    from timm.layers import SelectAdaptivePool2d

    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    model.global_pool = SelectAdaptivePool2d(pool_type="max", flatten=True)
    result = export_model(model, info, tmp_path / "max.onnx")
    assert result.method is None and result.outputs == ("probabilities",) and result.max_map_diff is None
    m = OnnxModel(result.path)
    assert not m.has_heatmap and m.method is None
    x = np.zeros((2, 3, info.image_size, info.image_size), np.float32)
    probs, heat = m.run(x)
    assert heat is None
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).softmax(1).numpy()
    assert np.abs(probs - expected).max() <= 1e-4


def test_predict_with_onnx_equals_predict_with_pytorch(tiny_run: Path, tiny_onnx: Path, synth_dir: Path) -> None:
    for tta in ("none", "d4"):
        a = predict(tiny_run / "model.safetensors", [synth_dir / "crack"], progress=False, tta=tta, device="cpu")
        b = predict(tiny_onnx, [synth_dir / "crack"], progress=False, tta=tta)
        assert [r.image for r in a] == [r.image for r in b]
        assert (
            max(
                np.abs(np.subtract(list(r.probabilities.values()), list(s.probabilities.values()))).max()
                for r, s in zip(a, b, strict=True)
            )
            <= 1e-4
        )
        assert [r.verdict for r in a] == [r.verdict for r in b]


def test_methods_outside_the_graph_are_refused(tiny_run: Path) -> None:
    model, _, _ = load_checkpoint(tiny_run / "model.safetensors")
    assert "scorecam" not in EXPORT_METHODS and "eigencam" not in EXPORT_METHODS
    with pytest.raises(MierukaError, match="only gradient methods"):
        ExplainedModel(model, "scorecam")


def test_foreign_and_broken_files_are_refused(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not an ONNX model that ONNX Runtime can load"):
        OnnxModel(broken)
    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save_model(proto, str(foreign))
    with pytest.raises(CheckpointError, match="not one written by mieruka"):
        OnnxModel(foreign)


def test_cli_export_and_predict(tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert (
        main(["export", str(tiny_run / "model.safetensors"), "--format", "onnx", "--out", str(out), "--all-classes"])
        == 0
    )
    text = capsys.readouterr().out
    assert "outputs probabilities, heatmap, heatmaps" in text and "checked with ONNX Runtime" in text
    assert OnnxModel(out).outputs == ("probabilities", "heatmap", "heatmaps")
    csv_path = tmp_path / "p.csv"
    assert main(["predict", "--model", str(out), str(synth_dir / "good"), "--out", str(csv_path), "--quiet"]) == 0
    assert len(csv_path.read_text(encoding="utf-8").splitlines()) == 1 + len(list((synth_dir / "good").glob("*.png")))
    assert main(["predict", str(out), "--quiet"]) == 2  # a model but no images: a usage error naming both
    assert "at least one image" in capsys.readouterr().err


def test_japanese_names_survive_export(tiny_run: Path, tmp_path: Path) -> None:
    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    names = ("欠陥A", "欠陥B", "良品", "正常(汚れ)", "正常(キズ)", "欠陥C")
    ja = replace(info, classes=names, verdicts=dict(zip(names, ("NG", "NG", "OK", "OK", "OK", "NG"), strict=True)))
    path = export_model(model, ja, tmp_path / "ja.onnx").path
    assert OnnxModel(path).info.classes == names


def test_info_reads_onnx_files(tiny_onnx: Path, capsys) -> None:
    assert main(["info", str(tiny_onnx)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["onnx"] == {"method": "gradcam", "outputs": ["probabilities", "heatmap"]}
    assert data["classes"] == list(OnnxModel(tiny_onnx).info.classes)
