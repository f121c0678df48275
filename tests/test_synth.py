from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mieruka.data.dataset import load_dataset
from mieruka.data.synth import CLASSES, make_image, write_dataset


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a, ma = make_image("crack", np.random.default_rng([0, 4, 1]))
    b, mb = make_image("crack", np.random.default_rng([0, 4, 1]))
    c, _ = make_image("crack", np.random.default_rng([1, 4, 1]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", CLASSES)
def test_masks_cover_the_mark_only(kind: str) -> None:
    areas = []
    for i in range(10):
        image, mask = make_image(kind, np.random.default_rng([2, i]), 224)
        assert image.shape == (224, 224) and image.dtype == np.uint8 and mask.dtype == bool
        areas.append(mask.mean())
    if kind == "good":
        assert max(areas) == 0.0
    else:
        # every defect is present and small, as on real parts
        assert min(areas) > 0.0002 and max(areas) < 0.1


def test_mark_changes_pixels_inside_its_mask() -> None:
    # Same surface draws, with and without the mark: the difference must sit in (a dilation of) the mask.
    rng_surface = np.random.default_rng(7)
    plain, _ = make_image("good", rng_surface, 128)
    marked, mask = make_image("blowhole", np.random.default_rng(7), 128)
    diff = np.abs(plain.astype(int) - marked.astype(int))
    # both draws used the same rng for the surface; the mark's rng use comes after it, so only the mark differs
    assert diff[mask].mean() > 20
    assert diff[~mask].mean() < 1.0


def test_write_dataset_layout_loads_with_masks(tmp_path: Path) -> None:
    result = write_dataset(tmp_path, per_class=3, seed=0, size=48, names="ja", progress=False)
    assert result.images == 18
    ds = load_dataset(tmp_path)
    assert set(ds.classes) == set(result.classes)
    assert ds.verdicts["正常(キズ)"] == "OK" and ds.verdicts["欠陥(割れ)"] == "NG" and ds.verdicts["良品"] == "OK"
    assert all(s.mask is not None for s in ds.samples)
    img = np.asarray(Image.open(ds.samples[0].image))
    assert img.shape == (48, 48)


def test_speed_at_224_on_one_core() -> None:
    # The demo and the test fixtures depend on this being fast; the floor is 50 images/s.
    rng = np.random.default_rng(0)
    make_image("crack", rng)
    t = time.perf_counter()
    n = 60
    for i in range(n):
        make_image(CLASSES[i % len(CLASSES)], rng)
    rate = n / (time.perf_counter() - t)
    assert rate >= 50, f"{rate:.0f} images/s"
