from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mieruka.data.images import image_size, read_image, read_mask
from mieruka.errors import DataError


def test_grayscale_is_replicated_to_rgb(tmp_path: Path) -> None:
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], arr)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_scaled_to_8bit(tmp_path: Path, ext: str) -> None:
    arr = np.array([[0, 257 * 128], [65535, 257 * 10]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / f"d{ext}")
    out = read_image(tmp_path / f"d{ext}")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 128], [255, 10]])


def test_palette_and_alpha(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1])
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png")[0], [[255, 0, 0], [0, 0, 255]])

    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    # transparent pixels are composited onto white, opaque ones stay
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0], [[255, 255, 255], [10, 20, 30]])


def test_bmp_and_jpeg(tmp_path: Path) -> None:
    arr = np.full((8, 6, 3), (40, 120, 200), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.bmp")
    Image.fromarray(arr).save(tmp_path / "x.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "x.bmp"), arr)
    assert np.abs(read_image(tmp_path / "x.jpg").astype(int) - arr).max() <= 3


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    arr = np.zeros((2, 3), dtype=np.uint8)
    arr[0, 0] = 255  # top-left marker
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape[:2] == (3, 2)
    assert out[0, 1, 0] > 200 and out[0, 0, 0] < 60  # marker moved to the top-right corner
    assert image_size(tmp_path / "o.jpg") == (2, 3)


def test_unicode_file_names(tmp_path: Path) -> None:
    path = tmp_path / "欠陥A" / "正常(キズ)_01.png"
    path.parent.mkdir()
    Image.new("L", (4, 4), 7).save(path)
    assert read_image(path)[0, 0, 0] == 7


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"this is not an image", "not an image"), (None, "truncated")],
)
def test_bad_files_name_the_path(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is None:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:600])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=needle) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(err.value)


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 Mpx, a few kB on disk
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match="decompression bomb") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_mask_nonzero_is_defect_and_size_checked(tmp_path: Path) -> None:
    m = np.zeros((4, 5), dtype=np.uint8)
    m[1, 2] = 1
    m[3, 4] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", image_shape=(4, 5))
    assert mask.dtype == bool and mask.sum() == 2 and mask[1, 2] and mask[3, 4]
    with pytest.raises(DataError) as err:
        read_mask(tmp_path / "m.png", image_path=tmp_path / "img.png", image_shape=(5, 5))
    assert "m.png" in str(err.value) and "img.png" in str(err.value) and "5×4" in str(err.value)


def test_16bit_images_are_scaled_by_one_fixed_factor(tmp_path: Path) -> None:
    # a 12-bit camera stored in 16 bits, and a 16-bit image whose values happen to stay under 256
    Image.fromarray(np.array([[0, 2048], [4095, 100]], dtype=np.uint16)).save(tmp_path / "twelve.png")
    Image.fromarray(np.array([[0, 200], [255, 100]], dtype=np.uint16)).save(tmp_path / "dim.png")
    # by the container's range: the same factor for both (dim stays dim, it is not brightened 257 ×)
    np.testing.assert_array_equal(read_image(tmp_path / "dim.png")[:, :, 0], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(read_image(tmp_path / "twelve.png")[:, :, 0], [[0, 8], [16, 0]])
    # told it is a 12-bit camera: its range fills 0–255
    np.testing.assert_array_equal(read_image(tmp_path / "twelve.png", bit_depth=12)[:, :, 0], [[0, 128], [255, 6]])


def test_a_huge_image_gets_one_limit_in_one_message(tmp_path: Path) -> None:
    from mieruka.data.images import MAX_PIXELS, ImageTooLarge

    path = tmp_path / "huge.png"
    Image.new("1", (20000, 10000)).save(path)  # 200 Mpx: past Pillow's own guard too
    with pytest.raises(ImageTooLarge) as err:
        read_image(path)
    assert f"{MAX_PIXELS:,}" in str(err.value) and "178,956,970" not in str(err.value)
