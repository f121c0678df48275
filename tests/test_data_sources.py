"""Data sources: each layout read on its own, and what they say about odd input."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from mieruka.data.dataset import load_dataset
from mieruka.data.sources import SOURCES, read_source
from mieruka.data.sources.folder import FolderSource
from mieruka.data.sources.manifest import ManifestSource
from mieruka.errors import DataError


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def test_each_path_goes_to_its_layout(tmp_path: Path) -> None:
    _image(tmp_path / "tree" / "good" / "a.png")
    (tmp_path / "m.csv").write_text("image,label\ntree/good/a.png,good\n", encoding="utf-8")
    assert read_source(tmp_path / "tree")[0].name == "folder"
    assert read_source(tmp_path / "m.csv")[0].name == "manifest"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a data set layout") as err:
        read_source(tmp_path / "notes.txt")
    assert all(s.description in str(err.value) for s in SOURCES)


def test_folder_source_reads_classes_masks_and_warns_of_empty_classes(tmp_path: Path) -> None:
    _image(tmp_path / "good" / "a.png")
    _image(tmp_path / "crack" / "deep" / "b.png")
    _image(tmp_path / "masks" / "crack" / "deep" / "b.png")
    (tmp_path / "empty").mkdir()
    contents = FolderSource().read(tmp_path)
    assert sorted(s.label for s in contents.samples) == ["crack", "good"]
    crack = next(s for s in contents.samples if s.label == "crack")
    assert crack.mask == tmp_path / "masks" / "crack" / "deep" / "b.png"
    assert len(contents.warnings) == 1 and "empty" in contents.warnings[0] and "holds no images" in contents.warnings[0]


def test_folder_names_in_decomposed_unicode_become_composed_class_names(tmp_path: Path) -> None:
    name = "ガラス"  # macOS file systems write カ + ゙ (NFD)
    _image(tmp_path / unicodedata.normalize("NFD", name) / "a.png")
    _image(tmp_path / "good" / "b.png")
    (sample,) = [s for s in FolderSource().read(tmp_path).samples if s.label != "good"]
    assert sample.label == name and unicodedata.is_normalized("NFC", sample.label)


def test_manifest_repeats_are_dropped_with_a_warning(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    csv = tmp_path / "m.csv"
    csv.write_text("image,label,split\na.png,good,train\nb.png,crack,test\n./a.png,good,train\n", encoding="utf-8")
    contents = ManifestSource().read(csv)
    assert [s.image.name for s in contents.samples] == ["a.png", "b.png"]
    assert contents.warnings == [f"{csv}: 1 row(s) repeat an earlier row exactly and were dropped: lines 4 (as 2)"]
    assert load_dataset(csv).warnings == tuple(contents.warnings)


def test_manifest_conflicts_name_both_rows(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    csv = tmp_path / "m.csv"
    csv.write_text("image,label,split\na.png,good,train\na.png,crack,test\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        ManifestSource().read(csv)
    message = str(err.value)
    assert "lines 2 and 3" in message and "good, train" in message and "crack, test" in message


def test_manifest_and_folder_give_the_same_samples(synth_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(synth_dir, tree)
    from_tree = load_dataset(tree, split_seed=3)
    from_tree.save_split(tmp_path / "split.csv")
    from_csv = load_dataset(tmp_path / "split.csv")
    assert [(s.image.resolve(), s.label, s.split) for s in from_csv.samples] == [
        (s.image.resolve(), s.label, s.split) for s in from_tree.samples
    ]


def _split_first(root: Path, per: int = 3, classes: tuple[str, ...] = ("good", "crack")) -> Path:
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        for c in classes:
            for i in range(per):
                _image(root / folder / c / f"{split}_{c}_{i}.png")
    _image(root / "masks" / "train" / "crack" / "train_crack_0.png")
    return root


def test_split_first_tree_gives_classes_and_splits_from_its_folders(tmp_path: Path) -> None:
    """ROOT/{train,valid,test}/<class>: classes from the second level, splits from the first (valid → val), masks
    mirrored under masks/<split>/; the dataset says what layout it read."""
    root = _split_first(tmp_path / "d")
    assert read_source(root)[0].name == "split-first"
    ds = load_dataset(root)
    assert ds.classes == ("crack", "good")
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    assert all(s.image.name.startswith(s.split) for s in ds.samples)
    assert all(s.image.name.split("_")[1] == s.label for s in ds.samples)
    masked = [s for s in ds.samples if s.mask is not None]
    assert [s.image.name for s in masked] == ["train_crack_0.png"]
    assert ds.layout.startswith("a split-first tree") and "splits from the data set" in ds.layout
    assert load_dataset(tmp_path / "d", split_seed=5).samples == ds.samples  # the folders decide, not the seed


def test_split_first_needs_every_split_and_warns_of_missing_classes(tmp_path: Path) -> None:
    root = _split_first(tmp_path / "d")
    shutil.rmtree(root / "test" / "crack")
    ds = load_dataset(root)
    assert any("no images of crack in the test split" in w for w in ds.warnings)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="test missing"):
        load_dataset(root)


def test_mixed_split_and_class_folders_are_ambiguous_until_named(tmp_path: Path) -> None:
    """train/ and test/ beside crack/: the error shows what was seen and how to say which layout is meant."""
    root = tmp_path / "d"
    for name in ("train", "test", "crack"):
        _image(root / name / "a.png")
    with pytest.raises(DataError, match=r"test, train look like splits, but crack look like classes.*--layout folder"):
        read_source(root)
    assert read_source(root, "folder")[0].name == "folder"
    assert load_dataset(root, layout="folder", fractions=(0.0, 0.0, 1.0)).classes == ("crack", "test", "train")
    with pytest.raises(DataError, match="--layout 'csv'"):
        read_source(root, "csv")


def test_mvtec_tree(tmp_path: Path) -> None:
    """train/good is OK training data; each defect type's test images become train / val / test (60/20/20) and
    test/good val and test (half and half) by the seeded rule, which the layout line says; ground_truth/<type>/
    <stem>_mask.png is attached to its image."""
    root = tmp_path / "bottle"
    for i in range(4):
        _image(root / "train" / "good" / f"{i:03d}.png")
    for kind in ("good", "broken_large", "contamination"):
        for i in range(5):
            _image(root / "test" / kind / f"{i:03d}.png")
            if kind != "good" and i != 3:
                _image(root / "ground_truth" / kind / f"{i:03d}_mask.png")
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")
    assert read_source(root)[0].name == "mvtec"
    ds = load_dataset(root)
    assert ds.classes == ("broken_large", "contamination", "good")
    assert ds.verdicts == {"broken_large": "NG", "contamination": "NG", "good": "OK"}
    assert "each defect type's test images split 60/20/20 into train/val/test" in ds.layout
    assert sorted(s.image.parent.name for s in ds.split("train") if s.label == "good") == ["good"] * 4
    assert {s.image.parent.parent.name for s in ds.split("train") if s.label == "good"} == {"train"}
    good_test = sorted(s.split for s in ds.samples if s.label == "good" and s.image.parent.parent.name == "test")
    assert good_test == ["test", "test", "test", "val", "val"]
    for kind in ("broken_large", "contamination"):
        assert sorted(s.split for s in ds.samples if s.label == kind) == ["test", "train", "train", "train", "val"]
    assert load_dataset(root).samples == ds.samples  # the rule is seeded: every command splits alike
    masks = {(s.label, s.image.stem): s.mask for s in ds.samples if s.label != "good"}
    assert masks[("broken_large", "000")] == root / "ground_truth" / "broken_large" / "000_mask.png"
    assert masks[("contamination", "003")] is None
    assert any("1 defect image(s) have no" in w or "2 defect image(s) have no" in w for w in ds.warnings)
    assert load_dataset(root).samples == ds.samples  # seeded: the same split every time


@pytest.mark.slow
def test_split_first_tree_trains_with_its_folders(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The interface: ROOT/{train,val,test}/<class>/ trains with the classes and splits of its folders, says what
    it detected, and evaluate reads the same splits."""
    import csv

    from conftest import TINY

    from mieruka.cli import main

    root = tmp_path / "tree"
    for i, image in enumerate(sorted(p for p in synth_dir.glob("*/*.png") if p.parent.name != "masks")):
        split = ("train", "train", "val", "test")[i % 4]
        target = root / split / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    run = tmp_path / "run"
    args = ["train", str(root), "--out", str(run), "--arch", TINY.arch, "--pretrained", "none"]
    args += ["--image-size", str(TINY.image_size), "--epochs", "1", "--batch-size", "16"]
    assert main(args) == 0
    rows = list(csv.DictReader((run / "split.csv").read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 48 and all(Path(r["image"]).parts[-3] == r["split"] for r in rows)  # 6 classes × 8
    assert all(Path(r["image"]).parts[-2] == r["label"] for r in rows)
    assert "data: a split-first tree" in capsys.readouterr().out
    assert (
        main(["evaluate", str(run / "model.safetensors"), str(root), "--split", "test", "--out", str(tmp_path / "e")])
        == 0
    )
    test_count = sum(1 for _ in (root / "test").rglob("*.png"))
    import json

    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["images"] == test_count
    # every command reads the tree as the model does (the layout stored with it)
    model = str(run / "model.safetensors")
    assert main(["explain", model, str(root), "--split", "test", "--out", str(tmp_path / "x"), "--quiet"]) == 0
    explained = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert len(explained["images"]) == test_count
    assert main(["audit", model, str(root), "--split", "test", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["check", str(root), "--out", str(tmp_path / "c")]) == 0


def test_layout_option_of_evaluate_and_audit(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """--layout reads a data set another way than the model was trained with: a tree with an empty folder named
    like a split is refused under auto and read under --layout folder by evaluate and audit."""
    from mieruka.cli import main

    root = tmp_path / "mixed"
    shutil.copytree(synth_dir, root, ignore=shutil.ignore_patterns("manifest.csv"))
    (root / "train").mkdir()  # a folder named like a split beside the class folders: ambiguous
    model = str(tiny_run / "model.safetensors")
    assert main(["evaluate", model, str(root), "--out", str(tmp_path / "e0"), "--quiet"]) == 2
    args = ["--layout", "folder", "--quiet"]
    assert main(["evaluate", model, str(root), "--out", str(tmp_path / "e"), *args]) == 0
    assert main(["audit", model, str(root), "--out", str(tmp_path / "a"), "--method", "gradcam", *args]) == 0
