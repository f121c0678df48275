"""mieruka check: counts, bad files, exact and near duplicates, and above all leaks across splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mieruka.cli import main
from mieruka.data.dataset import load_dataset
from mieruka.data.doctor import cheap_warnings, check_data, exact_duplicates
from mieruka.neighbors import backbone_features


def _photo(path: Path, seed: int, shift: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((8, 8, 3)) * 200).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC)).astype(np.int16) + shift
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A split-first tree: distinct photos; one file copied into test under another label, one photo re-lit
    (brightness +6) in val under another label, one copy within train under the same label."""
    root = tmp_path / "d"
    seed = 0
    for split in ("train", "val", "test"):
        for label in ("good", "crack"):
            for i in range(3):
                seed += 1
                _photo(root / split / label / f"{split}_{label}_{i}.png", seed * 101)
    shutil.copy(root / "train" / "crack" / "train_crack_0.png", root / "test" / "good" / "leak_exact.png")
    _photo(root / "val" / "crack" / "leak_near.png", 202, shift=6)  # train/good/train_good_1 re-lit, called crack
    shutil.copy(root / "train" / "good" / "train_good_0.png", root / "train" / "good" / "copy.png")
    return root


def test_check_finds_duplicates_and_leaks(tree: Path) -> None:
    dataset = load_dataset(tree)
    report = check_data(dataset, features=backbone_features, progress=False)
    assert report["counts"]["crack"] == {"train": 3, "val": 4, "test": 3}
    assert report["counts"]["good"] == {"train": 4, "val": 3, "test": 4}
    assert report["bad_files"] == []
    groups = [sorted(Path(e["image"]).name for e in g) for g in report["duplicates"]]
    assert sorted(groups) == [["copy.png", "train_good_0.png"], ["leak_exact.png", "train_crack_0.png"]]
    near = {frozenset(Path(p[k]["image"]).name for k in ("a", "b")) for p in report["near_duplicates"]}
    assert frozenset({"leak_near.png", "train_good_1.png"}) in near
    kinds = sorted(c["kind"] for c in report["cross_split_conflicts"])
    assert kinds.count("exact") == 1 and kinds.count("near") >= 1
    exact = next(c for c in report["cross_split_conflicts"] if c["kind"] == "exact")
    assert {(e["split"], e["label"]) for e in exact["images"]} == {("train", "crack"), ("test", "good")}
    assert all(
        c["a"]["split"] != c["b"]["split"] and c["a"]["label"] != c["b"]["label"]
        for c in report["cross_split_conflicts"]
        if c["kind"] == "near"
    )
    assert any("across splits with different labels" in w for w in report["warnings"])


def test_check_command_writes_check_json_and_exits_2_for_unreadable_data(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["check", str(tree), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "check.json").read_text(encoding="utf-8"))
    for key in ("counts", "bad_files", "duplicates", "near_duplicates", "cross_split_conflicts", "warnings"):
        assert key in report
    (tree / "test" / "crack" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(["check", str(tree), "--out", str(out), "--quiet", "--no-near"]) == 2
    report = json.loads((out / "check.json").read_text(encoding="utf-8"))
    assert [Path(b["image"]).name for b in report["bad_files"]] == ["broken.png"]
    assert report["near_duplicates"] == [] and report["near_threshold"] is None


def test_cheap_warnings_name_imbalance_missing_splits_and_copies(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(45):
        _photo(root / "good" / f"g{i}.png", i)
    for i in range(3):
        _photo(root / "crack" / f"c{i}.png", 100 + i)
    shutil.copy(root / "good" / "g0.png", root / "crack" / "relabeled.png")
    dataset = load_dataset(root)
    warnings = cheap_warnings(dataset)
    assert any("class imbalance: good has 45 images, crack 4" in w for w in warnings)
    assert any("carry different labels" in w for w in warnings)
    assert exact_duplicates([root / "good" / "g0.png", root / "crack" / "relabeled.png", tmp_path / "none"]) == [[0, 1]]
