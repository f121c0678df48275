"""JPEGs decoded on the model's device: the same pixels as the CPU path to a grey level or so, every other file
through the CPU path, the header parser against Pillow, and predict's read-ahead."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mieruka.data.device_decode import DeviceStore, resize_on_device
from mieruka.data.jpeg import jpeg_header, read_ahead
from mieruka.data.store import ImageStore, resize_image
from mieruka.predict import PredictOptions, PredictWorker, predict


def _photo(seed: int, size: tuple[int, int] = (120, 90)) -> Image.Image:
    coarse = (np.random.default_rng(seed).random((size[1] // 10, size[0] // 10, 3)) * 255).astype(np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture()
def mixed(tmp_path: Path) -> list[Path]:
    """RGB and grey JPEGs of two sizes, a progressive one, a CMYK one, an EXIF-rotated one, a PNG and a broken file."""
    paths = []
    for i in range(6):
        image = _photo(i, (120, 90) if i % 2 else (64, 80))
        if i == 3:
            image = image.convert("L")
        paths.append(tmp_path / f"{i}.jpg")
        image.save(paths[-1], quality=92, progressive=i == 5)
    _photo(7).convert("CMYK").save(tmp_path / "cmyk.jpg")
    rotated = _photo(8)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    _photo(9).save(tmp_path / "plain.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return [*paths, tmp_path / "cmyk.jpg", tmp_path / "rotated.jpg", tmp_path / "plain.png", tmp_path / "broken.jpg"]


def test_header_parser_agrees_with_pillow(mixed: list[Path]) -> None:
    for path in mixed:
        data = path.read_bytes()
        header = jpeg_header(data)
        if path.suffix == ".png" or path.name == "broken.jpg":
            assert header is None
            continue
        with Image.open(path) as img:
            components = {"RGB": 3, "L": 1, "CMYK": 4}[img.mode]
            assert header is not None
            marker, width, height, comps, orientation = header
            assert (width, height, comps) == (*img.size, components)
            assert orientation == img.getexif().get(0x0112, 1)
            assert marker == (0xC2 if path.name == "5.jpg" else 0xC0)


def test_device_store_equals_the_cpu_store(mixed: list[Path]) -> None:
    """Decoded on the 'device' (here the CPU, through the same torchvision decoder): the JPEGs it takes within
    2 grey levels of Pillow's path, the others exactly the CPU path's, the broken file named the same way."""
    device = DeviceStore(mixed, 48, torch.device("cpu"))
    cpu = ImageStore(mixed, 48, progress=False)
    assert device.on_device == 6  # the six plain JPEGs; CMYK, rotated, PNG and broken go through the CPU
    assert [(b.path, b.reason) for b in device.bad] == [(b.path, b.reason) for b in cpu.bad]
    assert [b.path.name for b in device.bad] == ["broken.jpg"]
    good = [i for i, p in enumerate(mixed) if p.name != "broken.jpg"]
    diff = (device.get(good).int() - cpu.get(good).int()).abs()
    assert int(diff[:6].max()) <= 2 and float(diff[:6].float().mean()) < 0.5
    assert int(diff[6:].max()) == 0
    assert device.sizes == cpu.sizes


def test_a_decoder_that_refuses_leaves_the_images_to_the_cpu(mixed: list[Path]) -> None:
    def refuses(_: list[torch.Tensor]) -> list[torch.Tensor]:
        raise RuntimeError("nvjpeg says no")

    store = DeviceStore(mixed, 32, torch.device("cpu"), decoder=refuses)
    cpu = ImageStore(mixed, 32, progress=False)
    good = [i for i, p in enumerate(mixed) if p.name != "broken.jpg"]
    assert store.on_device == 0 and torch.equal(store.get(good), cpu.get(good))


def test_resize_on_device_matches_pillow() -> None:
    image = np.array(_photo(3, (200, 150)))
    ours = resize_on_device(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), 64)[0]
    theirs = torch.from_numpy(resize_image(image, 64))
    assert int((ours.int() - theirs.int()).abs().max()) <= 1
    same = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    assert resize_on_device(same, 64) is same


def test_predict_with_device_decoding_and_read_ahead(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """--decode device gives predict's results within decoder rounding of --decode cpu; the worker's read-ahead is
    used for the chunk it was made for and ignored for another."""
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for p in sorted(synth_dir.glob("*/*.png"))[:12]:
        Image.open(p).convert("RGB").save(folder / f"{p.parent.name}_{p.stem}.jpg", quality=95)
    cpu = predict(tiny_run / "model.safetensors", [folder], decode="cpu", progress=False)
    dev = predict(tiny_run / "model.safetensors", [folder], decode="device", progress=False)
    diff = float(
        np.abs(
            np.array([list(r.probabilities.values()) for r in cpu])
            - np.array([list(r.probabilities.values()) for r in dev])
        ).max()
    )
    assert diff < 0.02

    from mieruka.batch.work import Item

    model = str(tiny_run / "model.safetensors")
    worker = PredictWorker(model, PredictOptions(device="cpu", batch_size=8, decode="device"))
    worker.setup()
    paths = sorted(folder.iterdir())
    items = [Item(i, str(p)) for i, p in enumerate(paths)]
    worker.prefetch(items[:4])
    assert worker._ahead is not None and worker._ahead[1].result().keys() == set(paths[:4])
    assert worker._prefetched(paths[4:8]) is None and worker._ahead is None  # another chunk: not used
    worker.prefetch(items[:4])
    rows = worker.process(items[:4])
    assert [r.label for r in rows] == [r.label for r in dev[:4]]
    assert read_ahead([tmp_path / "none.png"]) == {tmp_path / "none.png": None}
    cpu_worker = PredictWorker(model, PredictOptions(device="cpu", batch_size=8, decode="auto"))
    cpu_worker.setup()
    cpu_worker.prefetch(items[:4])  # on a CPU model with decode auto nothing is read ahead
    assert cpu_worker._ahead is None


def test_jpeg_header_rejects_garbage() -> None:
    assert jpeg_header(b"") is None
    assert jpeg_header(b"\xff\xd8\x00\x00\x00") is None
    buf = io.BytesIO()
    _photo(1).save(buf, "JPEG")
    assert jpeg_header(buf.getvalue()[:20]) is None  # cut before the frame header
