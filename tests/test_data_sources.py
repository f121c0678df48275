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
