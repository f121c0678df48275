"""--tracker mlflow: the training run, then the evaluation and the audit of its model, read back through MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mieruka.cli import main

pytestmark = pytest.mark.slow


def test_mlflow_run_holds_training_evaluation_and_audit(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the default store is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    args = ["train", str(synth_dir), "--out", str(run), "--pretrained", "none", "--image-size", "64"]
    assert main([*args, "--epochs", "2", "--batch-size", "16", "--tracker", "mlflow", "--quiet"]) == 0
    assert (tmp_path / "mlruns").is_dir()
    model = run / "model.safetensors"
    assert main(["evaluate", str(model), str(synth_dir), "--out", str(tmp_path / "e"), "--tracker", "mlflow",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["audit", str(model), str(synth_dir), "--out", str(tmp_path / "a"), "--tracker", "mlflow",
                 "--quiet"]) == 0  # fmt: skip

    code = "import mlflow; print(len(mlflow.search_runs(experiment_names=['mieruka'])))"
    fresh = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert fresh.stdout.split()[-1] == "1"  # a fresh process, MLflow's default store: the run in ./mlruns
    runs = mlflow.search_runs(experiment_names=["mieruka"])
    assert len(runs) == 1  # evaluate and audit logged to the training's run (its id is stored in the model)
    row = runs.iloc[0]
    assert row["params.arch"] == "tf_efficientnet_lite0" and row["params.image_size"] == "64"
    history = mlflow.tracking.MlflowClient().get_metric_history(row["run_id"], "val_balanced_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert 0.0 <= row["metrics.eval_test.accuracy"] <= 1.0
    assert 0.0 <= row["metrics.audit_test.gradcam.all.average_precision"] <= 1.0
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(row["run_id"])}
    assert {"model.safetensors", "training_curve.png", "eval_test", "audit_test"} <= artifacts
    logged = mlflow.artifacts.download_artifacts(
        run_id=row["run_id"], artifact_path="model.safetensors", dst_path=str(tmp_path / "logged")
    )
    assert Path(logged).read_bytes() == model.read_bytes()  # the model was complete, run id included, when logged


def test_tensorboard_event_files_hold_every_epoch(synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = ["train", str(synth_dir), "--out", str(run), "--pretrained", "none", "--image-size", "64"]
    assert main([*args, "--epochs", "2", "--batch-size", "16", "--tracker", "tensorboard", "--quiet"]) == 0
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_balanced_accuracy")] == [1, 2]
    assert {"train_loss", "val_loss", "lr"} <= set(events.Tags()["scalars"])
