from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mieruka.evaluate import evaluate
from mieruka.metrics import classification_metrics


def test_metrics_file_matches_predictions(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    ev = evaluate(tiny_run / "model.safetensors", synth_dir, tmp_path, split="test", progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    for key in (
        "classes",
        "accuracy",
        "balanced_accuracy",
        "per_class",
        "confusion_matrix",
        "escape_rate",
        "overkill_rate",
        "threshold",
        "schema_version",
    ):
        assert key in m, key
    assert m == ev.metrics
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    with open(tmp_path / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["images"] == 12  # 2 test images per class (8 per class, 60/20/20)
    classes = m["classes"]
    y_true = [classes.index(r["true"]) for r in rows]
    y_pred = [classes.index(r["predicted"]) for r in rows]
    # the summary is recomputable from the per-image rows
    again = classification_metrics(y_true, y_pred, classes)
    assert again["accuracy"] == pytest.approx(m["accuracy"])
    assert again["confusion_matrix"] == m["confusion_matrix"]
    probs = np.array([[float(r[f"p[{c}]"]) for c in classes] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    ng = [i for i, c in enumerate(classes) if m["verdicts"][c] == "NG"]
    np.testing.assert_allclose([float(r["ng_probability"]) for r in rows], probs[:, ng].sum(1), atol=2e-6)
    # the gate at the threshold follows from the rows too
    is_ng = np.array([r["true_verdict"] == "NG" for r in rows])
    rejected = np.array([float(r["ng_probability"]) >= m["threshold"] for r in rows])
    assert m["gate_at_threshold"]["escapes"] == int((is_ng & ~rejected).sum())
    assert m["threshold_chosen_on"] == "val"
    from mieruka.checkpoint import read_info

    assert m["tta"] == read_info(tiny_run / "model.safetensors").tta


def test_unknown_class_in_data_is_named(tiny_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "data" / "dent").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (16, 16)).save(tmp_path / "data" / "dent" / f"{i}.png")
    with pytest.raises(ValueError, match="dent are not among the model's classes"):
        evaluate(tiny_run / "model.safetensors", tmp_path / "data", tmp_path / "out", progress=False)
