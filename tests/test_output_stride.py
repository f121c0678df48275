"""``train --output-stride``: a dilated backbone, a finer map from the same closed-form Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.cli import main
from mieruka.config import TrainConfig
from mieruka.data.images import read_image
from mieruka.errors import MierukaError
from mieruka.explain.engine import explain
from mieruka.explain.graph import EXPORT_METHODS
from mieruka.explain.scaling import normalize_for_display
from mieruka.model_file import TorchModel
from mieruka.models import build_model
from mieruka.runtime import OnnxModel, prepare

LITE0 = "tf_efficientnet_lite0"


def _random_head(model: torch.nn.Module) -> torch.nn.Module:
    torch.nn.init.normal_(model.get_classifier().weight, std=0.3)  # visible class differences
    return model.eval()


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_dilated_backbone_has_the_stride_and_the_same_weights(stride: int) -> None:
    """The last feature map has one cell per ``stride`` pixels, and the stride-32 weights load into it unchanged
    (a dilated convolution has the shape of the strided one)."""
    torch.manual_seed(0)
    reference = build_model(LITE0, 4).eval()
    model = build_model(LITE0, 4, output_stride=stride).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (96 // stride, 96 // stride)
        if stride == 32:
            torch.testing.assert_close(model(x), reference(x))


def test_a_backbone_without_dilation_names_the_strides_it_supports() -> None:
    with pytest.raises(
        MierukaError, match=r"--output-stride 16: mobilenetv3_small_050 .* supports --output-stride 32$"
    ):
        build_model("mobilenetv3_small_050", 3, output_stride=16)
    with pytest.raises(ValueError, match="--output-stride must be one of 32, 16, 8"):
        TrainConfig(output_stride=4)


def test_train_refuses_a_stride_the_backbone_lacks_before_reading_data(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", str(synth_dir), "--out", str(run), "--arch", "mobilenetv3_small_050", "--output-stride", "16"]
    assert main([*args, "--pretrained", "none", "--quiet"]) == 2
    assert not run.exists()


@pytest.mark.parametrize("stride", [16, 8])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_fast_path_equals_autograd_on_the_dilated_map(stride: int, method: str) -> None:
    torch.manual_seed(1)
    model = _random_head(build_model(LITE0, 5, output_stride=stride))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (64 // stride, 64 // stride)
    fast = explain(model, x, method=method, targets="all")
    slow = explain(model, x, method=method, targets="all", allow_fast_path=False)
    assert fast.fast_path and not slow.fast_path
    scale = slow.maps.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(fast.maps / scale, slow.maps / scale, rtol=0, atol=1e-5)
    assert slow.maps.amax() > 0


def test_files_written_before_the_option_are_stride_32() -> None:
    data = {
        "arch": LITE0,
        "classes": ["a", "b"],
        "verdicts": {"a": "OK", "b": "NG"},
        "image_size": 64,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "target_layer": "bn2",
    }
    assert ModelInfo.from_json(json.dumps(data)).output_stride == 32
    with pytest.raises(ValueError, match="output_stride is 12, expected 32, 16 or 8"):
        ModelInfo.from_json(json.dumps({**data, "output_stride": 12}))


@pytest.fixture(scope="module")
def stride16_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("os16")
    args = ["train", str(synth_dir), "--out", str(run), "--output-stride", "16", "--epochs", "1", "--image-size",
            "64", "--pretrained", "none", "--freeze-stages", "0", "--quiet"]  # fmt: skip
    assert main(args) == 0
    return run


def test_every_command_honours_the_stored_stride(
    stride16_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train → info → explain → export: the model file says 16, is rebuilt dilated, its stored method (chosen by
    the default ``auto``) is one the graph computes, and the exported graph's heatmap equals the checkpoint's
    ``explain`` map of that method (display-scaled) within 1e-3."""
    model_path = stride16_run / "model.safetensors"
    assert main(["info", str(model_path)]) == 0
    assert json.loads(capsys.readouterr().out)["output_stride"] == 16
    model, info, _ = load_checkpoint(model_path)
    assert info.output_stride == 16 and info.explain_method in EXPORT_METHODS
    method = info.explain_method
    images = [read_image(p) for p in sorted(synth_dir.glob("crack/*.png"))[:4]]
    x = torch.from_numpy(prepare(images, info))
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (4, 4)  # cells of 16 px at 64 px
    assert main(["explain", str(model_path), str(synth_dir), "--split", "test", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 0  # fmt: skip
    explained = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert explained["output_stride"] == 16 and explained["method"] == method
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), "--out", str(out)]) == 0
    assert "note:" not in capsys.readouterr().out  # the line shows the stored method itself
    onnx_model = OnnxModel(out)
    assert onnx_model.info.output_stride == 16 and onnx_model.method == method
    probs, heat = onnx_model.run(x.numpy())
    ref = explain(model, x, method=method)
    assert heat is not None
    np.testing.assert_allclose(probs, ref.probs.numpy(), atol=1e-4)
    assert np.abs(heat - normalize_for_display(ref.maps[:, 0]).numpy()).max() <= 1e-3
    _, heat_torch = TorchModel(model_path).run(x.numpy())
    assert heat_torch is not None and np.abs(heat - heat_torch).max() <= 1e-3


def test_audit_of_the_exported_graph_equals_the_checkpoints(
    stride16_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """``audit MODEL.onnx`` and ``audit MODEL.safetensors`` give the same figures for the method the graph computes:
    what the audit measured is what the line shows."""
    model = stride16_run / "model.safetensors"
    method = load_checkpoint(model)[1].explain_method  # what the graph computes (the default auto chose it)
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(model), "--out", str(onnx_path)]) == 0
    figures = {}
    for name, path in (("checkpoint", model), ("onnx", onnx_path)):
        out = tmp_path / name
        assert main(["audit", str(path), str(synth_dir), "--split", "test", "--method", method, "--out", str(out),
                     "--quiet"]) == 0  # fmt: skip
        figures[name] = json.loads((out / "summary.json").read_text(encoding="utf-8"))["methods"][method]["all"]
    keys = ("energy_inside", "pointing_hit", "average_precision", "iou_at_area", "relevance_rank")
    assert figures["checkpoint"]["with_region"] == figures["onnx"]["with_region"] > 0
    for key in keys:
        assert figures["onnx"][key] == pytest.approx(figures["checkpoint"][key], abs=1e-3), key
