from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mieruka.explain.render import (
    colorize,
    grid,
    overlay,
    overlay_at,
    panel,
    to_original_size,
)


def test_jet_is_blue_for_low_and_red_for_high() -> None:
    c = colorize(np.array([[0.0, 1.0]]))
    low, high = c[0, 0].astype(int), c[0, 1].astype(int)
    assert low[2] > 100 and low[0] < 10  # blue
    assert high[0] > 100 and high[2] < 10  # red


def test_overlay_blend_and_size_check() -> None:
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    heat = np.ones((2, 3))
    out = overlay(image, heat, alpha=0.5)
    expected = np.round(0.5 * 100 + 0.5 * colorize(heat).astype(float))
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.ones((3, 3)))


def test_overlay_at_draws_the_same_picture_as_the_float_path() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:16, 0:16]
    heat = np.exp(-((yy - 4.0) ** 2 + (xx - 11.0) ** 2) / 20).astype(np.float32)  # one smooth blob, top right
    heat = (heat - heat.min()) / (heat.max() - heat.min())
    # At the map's own size only the rounding of the blend differs.
    same = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.abs(overlay_at(same, heat, (16, 16)).astype(int) - overlay(same, heat).astype(int)).max() <= 1
    # Upsampled to the image: the map is quantized before resizing instead of after, a few grey levels at most.
    out = overlay_at(image, heat, (30, 41))
    ref = overlay(image, to_original_size(torch.from_numpy(heat), (30, 41)).clamp(0, 1).numpy())
    assert out.shape == (30, 41, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 3
    # Zero opacity is the image itself, resized; full opacity is pure jet: red at the blob, blue far from it.
    np.testing.assert_array_equal(overlay_at(image, heat, (30, 41), alpha=0.0), image)
    jet = overlay_at(image, heat, (30, 41), alpha=1.0).astype(int)
    peak, far = jet[7, 28], jet[29, 0]
    assert peak[0] > 100 and peak[2] < 10 and far[2] > 100 and far[0] < 10


def test_map_resized_to_original_image() -> None:
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1
    big = to_original_size(heat, (40, 20))
    assert big.shape == (40, 20)
    assert big[:10, :5].mean() > big[30:, 15:].mean()


def test_panel_renders_japanese_caption_side_by_side() -> None:
    image = np.zeros((100, 50, 3), dtype=np.uint8)
    heat = np.zeros((100, 50))
    heat[40:60, 20:30] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pic = panel(image, heat, "true: 欠陥(割れ) / predicted: 正常(キズ) (p=0.91)", height=200)
    arr = np.asarray(pic)
    assert pic.height > 200 and pic.width >= 2 * 100  # two halves of 100 px width at 200 px height
    right = arr[:200, 106:206]
    r, g, b = (int(v) for v in right[100, 50])
    assert r > 50 and g < 10 and b < 10  # the hot spot is (dark) red on the right half
    r, g, b = (int(v) for v in right[10, 10])
    assert b > 50 and r < 10  # away from it, blue
    assert arr[:200, :100].max() == 0  # the input half is the (black) input
    caption = arr[200:, :200]
    assert (caption < 128).sum() > 50  # text was drawn (a missing font would draw nothing or boxes)
    sheet = grid([pic, pic, pic], cols=2)
    assert sheet.width == 2 * pic.width + 8 and sheet.height == 2 * pic.height + 8


def test_encode_png_round_trips_exactly() -> None:
    import io

    from PIL import Image

    from mieruka.explain.render import encode_png

    rng = np.random.default_rng(3)
    for shape in [(1, 1, 3), (7, 13, 3), (64, 48, 3)]:
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        data = encode_png(rgb)
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(img), rgb)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        encode_png(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_encode_png_with_either_deflate(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import zlib

    from PIL import Image

    from mieruka.explain import render

    if backend == "isal":
        isal = pytest.importorskip("isal.isal_zlib")  # in the serve extra, so in every test environment
        assert render._isal_zlib() is isal
    else:
        monkeypatch.setattr(render, "_isal_zlib", lambda: None)
    yy, xx = np.mgrid[0:40, 0:60]
    rgb = np.stack([xx * 4, yy * 6, (xx + yy) % 256], 2).astype(np.uint8)  # smooth, so it compresses
    data = render.encode_png(rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    assert len(idat) < rgb.size / 3  # compressed, not stored
    assert zlib.decompress(idat)[: 1 + 3 * 60][0] == 1  # a zlib stream of Sub-filtered rows
