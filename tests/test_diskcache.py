from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mieruka.data.diskcache import cache_key
from mieruka.data.store import ImageStore


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MIERUKA_CACHE_DIR", str(folder))
    return folder


def _images(synth_dir: Path, tmp_path: Path) -> list[Path]:
    paths = sorted((synth_dir / "crack").glob("*.png"))[:5]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    return [*paths, broken]


def test_disk_cache_holds_the_ram_pixels_and_is_reused(
    synth_dir: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images(synth_dir, tmp_path)
    ram = ImageStore(paths, 48, progress=False, cache="ram")
    disk = ImageStore(paths, 48, progress=False, cache="disk")
    assert ram.cache == "ram" and disk.cache == "disk" and not disk.reused
    assert disk.sizes == ram.sizes and [b.path for b in disk.bad] == [paths[-1]] == [b.path for b in ram.bad]
    good = [0, 3, 1, 4, 2]
    assert torch.equal(disk.get(good), ram.get(good))
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    stored = np.load(cache_dir / files[1], mmap_mode="r")  # a plain array any tool can map
    assert stored.shape == (6, 3, 48, 48) and np.array_equal(stored[good], ram.get(good).numpy())

    import mieruka.data.store as store_module

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reused cache decodes nothing")

    monkeypatch.setattr(store_module, "read_image", no_decoding)
    again = ImageStore(paths, 48, progress=False, cache="disk")
    assert again.reused and again.sizes == ram.sizes and torch.equal(again.get(good), ram.get(good))


def test_a_changed_file_or_size_makes_a_new_cache(synth_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for src, dst in zip(sorted((synth_dir / "crack").glob("*.png")), paths, strict=False):
        dst.write_bytes(src.read_bytes())
    key = cache_key(paths, 48, None)
    assert cache_key(paths, 64, None) != key and cache_key(paths, 48, 12) != key
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache_key(paths, 48, None) != key
    first = ImageStore(paths, 48, progress=False, cache="disk")
    paths[2].write_bytes((synth_dir / "good" / "good_0000.png").read_bytes())  # another picture in place
    second = ImageStore(paths, 48, progress=False, cache="disk")
    assert not second.reused and second.location != first.location
    assert not torch.equal(second.get([2]), first.get([2])) and torch.equal(second.get([0]), first.get([0]))


def test_auto_picks_disk_over_the_budget(synth_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    paths = sorted((synth_dir / "crack").glob("*.png"))[:4]
    assert ImageStore(paths, 32, progress=False, cache_bytes=4 * 3 * 32 * 32).cache == "ram"
    assert ImageStore(paths, 32, progress=False, cache_bytes=4 * 3 * 32 * 32 - 1).cache == "disk"
    with pytest.raises(ValueError, match="--cache 'swap'"):
        ImageStore(paths, 32, progress=False, cache="swap")


def test_training_from_the_disk_cache_equals_ram(synth_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    from dataclasses import replace

    from conftest import TINY

    from mieruka.train import train

    a = train(synth_dir, tmp_path / "ram", replace(TINY, epochs=1, cache="ram"), progress=False)
    b = train(synth_dir, tmp_path / "disk", replace(TINY, epochs=1, cache="disk"), progress=False)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["val_loss"] == b.history[0]["val_loss"]
    assert len(list(cache_dir.glob("*.npy"))) == 1
