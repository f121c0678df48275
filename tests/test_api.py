"""The Python surface: mieruka.load(...).predict / explain / audit, and mieruka.train."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mieruka
from mieruka.errors import DataError, MierukaError
from mieruka.predict import predict


def _images(synth_dir: Path, n: int = 4) -> list[Path]:
    return sorted(p for p in synth_dir.glob("*/*.png"))[:n]


def test_import_stays_cheap() -> None:
    code = "import sys, mieruka; print('torch' in sys.modules, callable(mieruka.load), callable(mieruka.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]


@pytest.mark.parametrize("kind", ["safetensors", "onnx"])
def test_predict_equals_the_command(kind: str, tiny_run: Path, tiny_onnx: Path, synth_dir: Path) -> None:
    """The interface: load(path).predict([path]) gives label, probabilities and verdict, the command's numbers;
    paths, PIL images and arrays give the same result."""
    model = tiny_run / "model.safetensors" if kind == "safetensors" else tiny_onnx
    paths = _images(synth_dir)
    insp = mieruka.load(model)
    got = insp.predict(paths)
    ref = predict(model, paths, progress=False)
    assert [r.label for r in got] == [r.label for r in ref]
    assert [r.verdict for r in got] == [r.verdict for r in ref]
    for g, r in zip(got, ref, strict=True):
        assert list(g.probabilities) == list(insp.info.classes)
        np.testing.assert_allclose(list(g.probabilities.values()), list(r.probabilities.values()), atol=1e-5)
        assert g.image == r.image and abs(g.ng_probability - r.ng_probability) < 1e-5
    pil = Image.open(paths[0])
    array = np.asarray(pil.convert("RGB"))
    for other in (insp.predict([pil])[0], insp.predict([array])[0], insp.predict(paths[0])[0]):
        assert other.label == got[0].label and other.probabilities == pytest.approx(got[0].probabilities, abs=1e-6)
    with pytest.raises(DataError, match="uint8"):
        insp.predict([array.astype(np.float32)])


def test_explain_gives_maps_at_each_image_size(tiny_run: Path, tiny_onnx: Path, synth_dir: Path) -> None:
    path = _images(synth_dir, 1)[0]
    wide = np.asarray(Image.open(path).convert("RGB").resize((96, 48)))
    insp = mieruka.load(tiny_run / "model.safetensors")
    ex = insp.explain([path, wide], method="gradcam")
    assert [e.heatmap.shape for e in ex] == [Image.open(path).size[::-1], (48, 96)]
    assert all(float(e.heatmap.min()) == 0.0 and float(e.heatmap.max()) == pytest.approx(1.0) for e in ex)
    onnx = mieruka.load(tiny_onnx).explain([path])[0]  # the exported graph's map: the same Grad-CAM
    assert onnx.method == "gradcam" and onnx.prediction.label == ex[0].prediction.label
    assert float(np.abs(onnx.heatmap - ex[0].heatmap).max()) < 1e-3
    layer = insp.explain([path], method="layercam:multiscale/product", target=insp.info.classes[0])[0]
    assert layer.method == "layercam:multiscale/product" and layer.heatmap.shape == ex[0].heatmap.shape
    with pytest.raises(MierukaError, match="computes the gradcam map of the predicted class only"):
        mieruka.load(tiny_onnx).explain([path], method="gradcam++")


@pytest.mark.slow
def test_train_and_audit_from_python(synth_dir: Path, tmp_path: Path) -> None:
    result = mieruka.train(synth_dir, out=tmp_path / "run", pretrained="none", image_size=64, epochs=1, batch_size=16)
    assert result.model_path.is_file()
    inspector = mieruka.load(result.model_path)
    summary = inspector.audit(synth_dir, out=tmp_path / "audit", report=False)
    stored = inspector.info.explain_method  # chosen on the validation regions after training
    assert list(summary.methods) == list(dict.fromkeys([stored, "gradcam"])) and summary.split == "test"
    assert summary.model == str(result.model_path)
    # the typed summary is summary.json, field for field
    assert summary.to_json() == json.loads((tmp_path / "audit" / "summary.json").read_text(encoding="utf-8"))
    assert summary.figures("gradcam").images == summary.regions.images


@pytest.mark.slow
def test_the_readme_example_runs(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The README's Python example, run as written (its paths pointed at the test's model and images)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    images = _images(synth_dir, 2)
    code = (
        block.replace("runs/r1/model.safetensors", str(tiny_run / "model.safetensors"))
        .replace('"part1.png"', repr(str(images[0])))
        .replace('"part2.png"', repr(str(images[1])))
        .replace('"data/"', repr(str(synth_dir)))
        .replace('"audit/"', repr(str(tmp_path / "audit")))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(images[0]) in out.stdout
