from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mieruka.errors import DataError
from mieruka.predict import collect_images, predict


def test_predict_folder_and_file(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    results = predict(
        tiny_run / "model.safetensors",
        [synth_dir / "crack", synth_dir / "good" / "good_0000.png"],
        out=out,
        progress=False,
    )
    assert len(results) == 9
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["image"]) for r in rows] == [r.image for r in results]
    for r, row in zip(results, rows, strict=True):
        assert row["class"] == r.label
        assert r.probability == max(r.probabilities)
        assert r.verdict == ("NG" if r.ng_probability >= 0.0 + float(_threshold(tiny_run)) else "OK")


def _threshold(run: Path) -> float:
    from mieruka.checkpoint import read_info

    t = read_info(run / "model.safetensors").ng_threshold
    assert t is not None
    return t


def test_explicit_threshold_overrides(tiny_run: Path, synth_dir: Path) -> None:
    always = predict(tiny_run / "model.safetensors", [synth_dir / "good"], threshold=0.0, progress=False)
    never = predict(tiny_run / "model.safetensors", [synth_dir / "good"], threshold=1.01, progress=False)
    assert {r.verdict for r in always} == {"NG"} and {r.verdict for r in never} == {"OK"}


def test_bad_inputs_are_named(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.png: no such file"):
        collect_images([tmp_path / "nothing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: the folder holds no images"):
        collect_images([tmp_path / "empty"])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="broken.png"):
        predict(tiny_run / "model.safetensors", [bad], progress=False)
