from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import MAGNETIC_TILE
from PIL import Image

from mieruka.data.dataset import Dataset, default_verdicts, load_dataset, resolve_verdicts, stratified_split
from mieruka.errors import DataError


def _img(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 6), value).save(path)


def test_default_verdicts() -> None:
    names = [
        "free",
        "Good",
        "normal (scratch)",
        "normal (dirt)",
        "正常(キズ)",
        "良品",
        "OK_parts",
        "crack",
        "defect A",
        "欠陥A",
        "no defect",
        "scratch",
    ]
    v = default_verdicts(names)
    assert [n for n in names if v[n] == "OK"] == [*names[:7], "no defect"]


def test_ok_override_and_unknown_class() -> None:
    assert resolve_verdicts(["a", "b", "free"], ["a"]) == {"a": "OK", "b": "NG", "free": "NG"}
    with pytest.raises(DataError, match="--ok zzz: no such class; the classes are: a, b"):
        resolve_verdicts(["a", "b"], ["zzz"])


def test_folder_tree_with_unicode_masks_and_ignored_files(tmp_path: Path) -> None:
    for i in range(3):
        _img(tmp_path / "欠陥A" / "sub" / f"画像{i}.png")
        _img(tmp_path / "正常(キズ)" / f"{i}.jpg")
    _img(tmp_path / "masks" / "欠陥A" / "sub" / "画像1.png", 255)
    (tmp_path / "欠陥A" / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.classes == ("欠陥A", "正常(キズ)")
    assert ds.verdicts == {"欠陥A": "NG", "正常(キズ)": "OK"}
    assert len(ds.samples) == 6
    with_mask = [s for s in ds.samples if s.mask is not None]
    assert [s.image.name for s in with_mask] == ["画像1.png"]
    assert with_mask[0].mask == tmp_path / "masks" / "欠陥A" / "sub" / "画像1.png"
    assert ds.ignored == (tmp_path / "欠陥A" / "notes.txt",)
    assert Counter(s.split for s in ds.samples) == {"train": 2, "val": 2, "test": 2}


def test_manifest_relative_paths_and_split(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    (tmp_path / "m.csv").write_text(
        "image,label,mask,split\nimgs/a.png,crack,,train\nimgs/b.png,free,imgs/a.png,val\n", encoding="utf-8"
    )
    ds = load_dataset(tmp_path / "m.csv")
    assert [s.image for s in ds.samples] == [tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png"]
    assert [s.split for s in ds.samples] == ["train", "val"]
    assert ds.samples[0].mask is None and ds.samples[1].mask == tmp_path / "imgs" / "a.png"
    assert ds.verdicts == {"crack": "NG", "free": "OK"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("file,label\na.png,x\n", "missing image"),
        ("image,label,split\na.png,x,training\n", "line 2: split 'training'"),
        ("image,label,split\na.png,x,train\nb.png,x,\n", "empty split"),
        ("image,label\n", "lists no images"),
        ("image,label\n,x\n", "line 2: empty image"),
    ],
)
def test_bad_manifest_names_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=needle) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path)
    (tmp_path / "cls").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path)


def test_stratified_split_is_seeded_and_proportional() -> None:
    labels = ["a"] * 50 + ["b"] * 10
    s1 = stratified_split(labels, seed=3)
    assert s1 == stratified_split(labels, seed=3)
    assert s1 != stratified_split(labels, seed=4)
    counts = Counter(zip(labels, s1, strict=True))
    assert (counts["a", "train"], counts["a", "val"], counts["a", "test"]) == (30, 10, 10)
    assert (counts["b", "train"], counts["b", "val"], counts["b", "test"]) == (6, 2, 2)


def test_class_too_small_for_split_is_named() -> None:
    with pytest.raises(DataError, match="class 'rare' has 2 image"):
        stratified_split(["common"] * 10 + ["rare"] * 2)


def test_saved_split_reloads_identically(synth_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(synth_dir, split_seed=5)
    ds.save_split(tmp_path / "split.csv")
    again = load_dataset(tmp_path / "split.csv")

    def resolved(d: Dataset) -> list[tuple]:
        return [(s.image.resolve(), s.label, s.mask and s.mask.resolve(), s.split) for s in d.samples]

    assert resolved(again) == resolved(ds)
    # paths relative to the CSV's folder, as a manifest's are read: the file works from any working directory
    first = (tmp_path / "split.csv").read_text(encoding="utf-8").splitlines()[1]
    assert not first.startswith("/") and first.startswith("../")


@pytest.mark.skipif(not MAGNETIC_TILE.is_file(), reason="shared magnetic-tile data not present")
def test_magnetic_tile_manifest_loads_as_is() -> None:
    ds = load_dataset(MAGNETIC_TILE)
    assert len(ds.samples) == 1344
    assert ds.classes == ("blowhole", "break", "crack", "fray", "free", "uneven")
    assert ds.verdicts["free"] == "OK" and sum(v == "NG" for v in ds.verdicts.values()) == 5
    counts = ds.counts()
    assert (counts["train"]["free"], counts["val"]["free"], counts["test"]["free"]) == (571, 190, 191)
    assert (counts["train"]["fray"], counts["val"]["fray"], counts["test"]["fray"]) == (19, 6, 7)
    assert all(s.mask is not None and s.mask.is_file() for s in ds.samples[:20])
    assert len(ds.split("test")) == 270  # the README table: 191 + 23 + 17 + 12 + 7 + 20


def test_split_name_is_checked(synth_dir: Path) -> None:
    with pytest.raises(DataError, match="--split 'testing'"):
        load_dataset(synth_dir).split("testing")
    assert np.isclose(len(load_dataset(synth_dir).split("all")), 48)
