from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mieruka.evaluate import evaluate
from mieruka.evaluation import EvaluationMetrics
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
    assert m == ev.metrics.to_json()
    assert EvaluationMetrics.read(tmp_path / "metrics.json") == ev.metrics  # typed, field for field
    assert ev.metrics.gate_at_threshold.ng_parts == sum(ev.metrics.verdicts[c] == "NG" for c in m["classes"]) * 2
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


def _manifest_with_a_relabelled_copy(synth_dir: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """Every synthetic image for training, and a test split of four others plus a copy of one training image under
    another class's name: the copy's nearest training image must be its original."""
    rows = []
    images = sorted(p for p in synth_dir.rglob("*.png") if "masks" not in p.parts)
    for i, p in enumerate(images):
        rows.append((str(p), p.parent.name, "test" if i % 12 == 5 else "train"))
    original = next(r for r in rows if r[2] == "train" and r[1] == "crack")
    copy = tmp_path / "copy.png"
    shutil.copyfile(original[0], copy)
    rows.append((str(copy), "good", "test"))
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "split"), *rows])
    return manifest, original[0], str(copy)


def test_neighbors_find_the_training_original_of_a_relabelled_copy(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    manifest, original, copy = _manifest_with_a_relabelled_copy(synth_dir, tmp_path)
    out = tmp_path / "eval"
    ev = evaluate(tiny_run / "model.safetensors", manifest, out, split="test", neighbors=2, progress=False)
    with open(out / "neighbors.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * ev.metrics.images
    first = {r["image"]: r for r in rows if r["rank"] == "1"}
    assert first[copy]["neighbor"] == original and first[copy]["neighbor_label"] == "crack"
    assert float(first[copy]["similarity"]) == pytest.approx(1.0, abs=1e-4)
    for r in rows:  # ranked by similarity, every neighbor from the training split
        assert "copy" not in r["neighbor"]
    sims = [[float(r["similarity"]) for r in rows if r["image"] == img] for img in first]
    assert all(s[0] >= s[1] for s in sims)
    # the summary counts the errors whose nearest training image has the predicted class, as the files say
    with open(out / "predictions.csv", encoding="utf-8") as fh:
        preds = list(csv.DictReader(fh))
    errors = [p for p in preds if p["true"] != p["predicted"]]
    like = [p["image"] for p in errors if first[p["image"]]["neighbor_label"] == p["predicted"]]
    n = ev.metrics.neighbors
    assert n is not None
    assert (n.k, n.errors, n.errors_nearest_labelled_as_predicted) == (2, len(errors), len(like))
    assert sorted(n.images) == sorted(like)
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["neighbors"]["images"] == n.images
    assert (out / "neighbors.png").is_file() == bool(errors)


def test_neighbors_need_a_training_split(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    from mieruka.errors import MierukaError

    manifest, _, copy = _manifest_with_a_relabelled_copy(synth_dir, tmp_path)
    only_test = tmp_path / "only_test.csv"
    only_test.write_text(f"image,label,split\n{copy},good,test\n", encoding="utf-8")
    with pytest.raises(MierukaError, match="--neighbors: the data set has no training split"):
        evaluate(tiny_run / "model.safetensors", only_test, tmp_path / "e", neighbors=1, progress=False)
    with pytest.raises(MierukaError, match="--neighbors must not be negative"):
        evaluate(tiny_run / "model.safetensors", manifest, tmp_path / "e", neighbors=-1, progress=False)


def test_an_unreadable_image_is_listed_and_left_out_of_the_figures(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import csv
    import shutil

    from mieruka.checkpoint import read_info
    from mieruka.errors import DataError

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    test = read_info(tiny_run / "model.safetensors").load_dataset(data).split("test")
    broken = test[3].image
    broken.write_bytes(b"")
    ev = evaluate(tiny_run / "model.safetensors", data, tmp_path / "e", progress=False)
    assert ev.metrics.images == len(test) - 1
    assert [u.image for u in ev.metrics.unreadable] == [str(broken)]
    assert "0 bytes" in ev.metrics.unreadable[0].reason
    assert sum(sum(row) for row in ev.metrics.confusion_matrix) == len(test) - 1
    with open(tmp_path / "e" / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(test) and rows[-1]["image"] == str(broken) and "0 bytes" in rows[-1]["error"]
    assert all(r["error"] == "" and r["predicted"] for r in rows[:-1])
    with pytest.raises(DataError, match="0 bytes"):
        evaluate(tiny_run / "model.safetensors", data, tmp_path / "e2", strict=True, progress=False)


def test_the_exported_file_evaluates_like_the_checkpoint(
    tiny_run: Path, tiny_onnx: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The interface: evaluate MODEL.onnx writes the same metrics.json keys, and the same figures within 1e-4 on
    probabilities, as the .safetensors it came from; --neighbors needs the checkpoint's features."""
    from mieruka.cli import main
    from mieruka.errors import MierukaError

    for name, model in (("st", tiny_run / "model.safetensors"), ("onnx", tiny_onnx)):
        assert main(["evaluate", str(model), str(synth_dir), "--split", "test", "--out", str(tmp_path / name),
                     "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    st = json.loads((tmp_path / "st" / "metrics.json").read_text())
    ox = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    assert sorted(st) == sorted(ox)
    # the threshold is a validation image's NG probability: equal within the probabilities' tolerance
    assert st.pop("threshold") == pytest.approx(ox.pop("threshold"), abs=1e-4)
    assert {k: v for k, v in st.items() if k != "model"} == {k: v for k, v in ox.items() if k != "model"}
    rows = [list(csv.DictReader((tmp_path / n / "predictions.csv").open(encoding="utf-8"))) for n in ("st", "onnx")]
    cols = [c for c in rows[0][0] if c.startswith("p[")]
    assert cols and max(abs(float(a[c]) - float(b[c])) for a, b in zip(*rows, strict=True) for c in cols) <= 1e-4
    with pytest.raises(MierukaError, match="--neighbors needs"):
        evaluate(tiny_onnx, synth_dir, tmp_path / "nn", neighbors=2, progress=False)


def test_a_metrics_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from mieruka.errors import DataError

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"schema_version": 99}), encoding="utf-8")
    with pytest.raises(DataError, match="schema version 99; this mieruka reads up to 1"):
        EvaluationMetrics.read(path)
    path.write_text(json.dumps({"schema_version": 1, "split": "test"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.json: not an evaluation's metrics.json"):
        EvaluationMetrics.read(path)
