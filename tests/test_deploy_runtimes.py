"""Where an exported model runs: ONNX Runtime's providers, OpenVINO IR, and what predict and serve report."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mieruka.cli import main
from mieruka.deploy.providers import PROVIDERS, provider_list, short_name
from mieruka.errors import MierukaError
from mieruka.export import export_onnx
from mieruka.model_file import load_runtime
from mieruka.predict import predict
from mieruka.runtime import OnnxModel

CPU, CUDA, TRT, OV = (PROVIDERS[k] for k in ("cpu", "cuda", "tensorrt", "openvino"))


def test_auto_takes_the_best_installed_provider() -> None:
    assert provider_list("auto", [CPU]) == [CPU]
    assert provider_list("auto", ["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert provider_list("auto", [OV, CUDA, TRT, CPU]) == [TRT, CPU]
    assert provider_list("auto", [OV, CPU]) == [OV, CPU]
    assert provider_list("cpu", [CUDA, CPU]) == [CPU]
    assert short_name(CUDA) == "cuda" and short_name("AzureExecutionProvider") == "AzureExecutionProvider"


def test_a_provider_that_is_not_installed_is_named_with_its_package() -> None:
    with pytest.raises(MierukaError, match="--provider cuda: .* install onnxruntime-gpu"):
        provider_list("cuda", [CPU])
    with pytest.raises(MierukaError, match="--provider 'tpu': choose auto"):
        provider_list("tpu", [CPU])


def test_predict_reports_the_provider(
    tiny_onnx: Path, tiny_run: Path, synth_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = predict(tiny_onnx, [synth_dir], provider="cpu", progress=False)
    assert run.runtime == "onnxruntime (cpu)" and len(run) > 0
    assert OnnxModel(tiny_onnx, provider="auto").provider == "cpu"  # the only one installed here
    torch_run = predict(tiny_run / "model.safetensors", [synth_dir], provider="cpu", progress=False)
    assert torch_run.runtime == "pytorch (cpu)"
    assert [r.label for r in torch_run] == [r.label for r in run]
    main(["predict", str(tiny_onnx), str(synth_dir), "--provider", "cpu", "--quiet"])
    assert "runtime: onnxruntime (cpu)" in capsys.readouterr().err


def test_serve_reports_the_provider(tiny_onnx: Path) -> None:
    from fastapi.testclient import TestClient

    from mieruka.serve.app import create_app

    runtime = load_runtime(tiny_onnx, provider="cpu")
    model = TestClient(create_app(runtime)).get("/v1/model").json()
    assert model["backend"] == "onnxruntime" and model["provider"] == "cpu"


@pytest.mark.slow
def test_openvino_ir_is_checked_and_runs_like_the_onnx_graph(
    tiny_run: Path, tiny_onnx: Path, tiny_openvino: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """export --format openvino writes NAME.xml + NAME.bin, checked against the ONNX graph; predict and the
    runtime interface run it with the ONNX graph's numbers (float32 on the CPU)."""
    out = tiny_openvino  # written by the export command into a folder of its own
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.xml"]  # no temporaries left
    ir, graph = load_runtime(out), OnnxModel(tiny_onnx)
    assert ir.backend == "openvino" and ir.provider == "openvino:CPU" and ir.info == graph.info
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype("f4")
    (p_ir, h_ir), (p_onnx, h_onnx) = ir.run(x), graph.run(x)
    assert np.abs(p_ir - p_onnx).max() < 1e-4
    assert h_ir is not None and h_onnx is not None and np.abs(h_ir - h_onnx).max() < 1e-3
    # infer requests are reused: an answer is a copy, not the request's buffer that the next call overwrites
    again = ir.run(x[::-1].copy())
    assert np.array_equal(ir.run(x)[0], p_ir) and np.abs(again[0] - p_ir[::-1]).max() < 1e-6
    with ThreadPoolExecutor(4) as pool:  # concurrent callers each get their own request and their own answer
        answers = list(pool.map(lambda i: ir.run(x[i : i + 1])[0], [0, 1, 2] * 4))
    assert all(np.abs(a - p_ir[i % 3]).max() < 1e-5 for i, a in enumerate(answers))
    run = predict(out, [synth_dir], progress=False)
    ref = predict(tiny_onnx, [synth_dir], progress=False)
    assert run.runtime == "openvino (openvino:CPU)"
    assert [r.label for r in run] == [r.label for r in ref]
    with pytest.raises(MierukaError, match="written as NAME.xml"):
        export_onnx(tiny_run / "model.safetensors", tmp_path / "m.onnx", fmt="openvino")


def test_openvino_refuses_foreign_or_incomplete_ir(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from mieruka.errors import CheckpointError

    (tmp_path / "lonely.xml").write_text("<net/>")
    with pytest.raises(CheckpointError, match="needs lonely.xml and .bin"):
        load_runtime(tmp_path / "lonely.xml")
