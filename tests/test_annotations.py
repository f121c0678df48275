from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mieruka.data.annotations import Box, rasterize, read_coco, read_region, read_voc, read_yolo
from mieruka.data.dataset import load_dataset
from mieruka.errors import DataError

# One box on a 10 × 8 (W × H) image covering columns 1–3 and rows 2–4 (0-based pixel indices): 9 pixels.
EXPECTED = np.zeros((8, 10), dtype=bool)
EXPECTED[2:5, 1:4] = True


def _voc(path: Path, objects: str, size: str = "<size><width>10</width><height>8</height><depth>3</depth></size>"):
    path.write_text(f"<annotation><filename>a.png</filename>{size}{objects}</annotation>", encoding="utf-8")
    return path


VOC_BOX = "<object><name>crack</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object>"


def test_voc_box_is_one_based_inclusive(tmp_path: Path) -> None:
    path = _voc(tmp_path / "a.xml", VOC_BOX)
    boxes = read_voc(path)
    assert boxes == [Box(1.0, 2.0, 4.0, 5.0, "crack")]
    np.testing.assert_array_equal(read_region(path, "a.png", (8, 10)), EXPECTED)


def test_coco_box_polygon_and_lookup_by_file_name(tmp_path: Path) -> None:
    data = {
        "images": [
            {"id": 1, "file_name": "sub/a.png", "width": 10, "height": 8},
            {"id": 2, "file_name": "b.png", "width": 10, "height": 8},
        ],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 3]},
            # a right triangle in COCO's pixel-edge coordinates: it holds the pixel centers (x + .5, y + .5) with
            # x + y ≤ 3 (those with x + y = 3 lie on its long side)
            {"id": 8, "image_id": 2, "category_id": 3, "segmentation": [[0, 0, 4, 0, 0, 4]], "bbox": [0, 0, 4, 4]},
        ],
        "categories": [{"id": 3, "name": "crack"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    stated, boxes = read_coco(path, tmp_path / "a.png")  # matched by base name
    assert stated == (8, 10) and boxes == [Box(1.0, 2.0, 4.0, 5.0, "crack")]
    np.testing.assert_array_equal(read_region(path, tmp_path / "a.png", (8, 10)), EXPECTED)
    tri = read_region(path, "b.png", (8, 10))
    rows, cols = np.mgrid[0:8, 0:10]
    np.testing.assert_array_equal(tri, rows + cols <= 3)
    with pytest.raises(DataError, match=r"coco.json: no entry in 'images' has the file name 'c.png'"):
        read_region(path, "c.png", (8, 10))
    with pytest.raises(DataError, match=r"says 10×8 pixels but the image is 12×8"):
        read_region(path, "a.png", (8, 12))


def test_yolo_normalized_center_format(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    # center (2.5, 3.5) px of 10 × 8, size 3 × 3 px
    path.write_text("0 0.25 0.4375 0.3 0.375\n\n", encoding="utf-8")
    assert read_yolo(path, (8, 10), names=["crack"])[0].label == "crack"
    np.testing.assert_array_equal(read_region(path, "a.png", (8, 10)), EXPECTED)


def test_rasterize_clips_and_unions() -> None:
    mask = rasterize([Box(-5, -5, 1, 1), Box(8.6, 6.6, 40, 40)], (8, 10))
    # a pixel is inside when its center is: (0, 0) of the first box; of the second only (7, 9), since the centers
    # of column 8 (8.5) and row 6 (6.5) lie before its edges at 8.6 and 6.6
    assert mask.sum() == 2
    assert mask[0, 0] and mask[7, 9] and not mask[7, 8] and not mask[6, 9]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<object><name>crack</name></object>", r"a.xml: object 1 \(crack\): no <bndbox>"),
        (
            "<object><name>x</name><bndbox><xmin>5</xmin><ymin>3</ymin><xmax>2</xmax><ymax>5</ymax></bndbox></object>",
            r"a.xml: object 1 \(x\): the box is empty or inverted",
        ),
        (
            VOC_BOX + "<object><bndbox><xmin>a</xmin><ymin>3</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object>",
            r"a.xml: object 2: xmin is 'a', not a number",
        ),
    ],
)
def test_malformed_voc_names_file_and_entry(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_voc(_voc(tmp_path / "a.xml", body))


def test_malformed_files_name_file_and_entry(tmp_path: Path) -> None:
    bad_xml = tmp_path / "b.xml"
    bad_xml.write_text("<annotation><object>", encoding="utf-8")
    with pytest.raises(DataError, match=r"b.xml: not a readable Pascal VOC XML file"):
        read_voc(bad_xml)
    yolo = tmp_path / "y.txt"
    yolo.write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"y.txt: line 2: expected 'class cx cy w h'"):
        read_yolo(yolo, (8, 10))
    yolo.write_text("0 12 40 3 3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"y.txt: line 1: YOLO coordinates must be normalized"):
        read_yolo(yolo, (8, 10))
    coco = tmp_path / "c.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png"}],
                "annotations": [{"id": 7, "image_id": 2, "bbox": [0, 0, 1, 1]}],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"c.json: annotations\[0\] \(id 7\): its image_id is missing"):
        read_coco(coco, "a.png")
    coco.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"c.json: not a readable COCO JSON file"):
        read_coco(coco, "a.png")
    with pytest.raises(DataError, match=r"<size> says 10×8 pixels but the image a.png is 20×8"):
        read_region(_voc(tmp_path / "a.xml", VOC_BOX), "a.png", (8, 20))


def test_folder_tree_finds_mirrored_box_files(tmp_path: Path) -> None:
    for cls in ("crack", "good"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (10, 8), (100, 100, 100)).save(tmp_path / cls / f"{cls}{i}.png")
    (tmp_path / "masks" / "crack").mkdir(parents=True)
    _voc(tmp_path / "masks" / "crack" / "crack0.xml", VOC_BOX)
    (tmp_path / "masks" / "crack" / "crack1.txt").write_text("0 0.25 0.4375 0.3 0.375\n", encoding="utf-8")
    ds = load_dataset(tmp_path)
    by_name = {s.image.name: s for s in ds.samples}
    assert by_name["crack0.png"].mask == tmp_path / "masks" / "crack" / "crack0.xml"
    assert by_name["crack1.png"].mask == tmp_path / "masks" / "crack" / "crack1.txt"
    assert by_name["crack2.png"].mask is None
    for name in ("crack0.png", "crack1.png"):
        s = by_name[name]
        assert s.mask is not None
        np.testing.assert_array_equal(read_region(s.mask, s.image, (8, 10)), EXPECTED)


def test_coco_structure_and_numbers_are_checked_with_the_file_named(tmp_path: Path) -> None:
    import json

    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "categories": 3}), encoding="utf-8")
    with pytest.raises(DataError, match=r"coco\.json: 'categories' must be a list, got int"):
        read_coco(path, "a.png")
    path.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": "abc", "width": 8}], "annotations": []}),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"coco\.json: images\[0\] \(a\.png\): height is 'abc', not a number"):
        read_coco(path, "a.png")


def test_voc_size_that_is_not_a_number_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(
        "<annotation><size><width>abc</width><height>8</height></size><object><name>crack</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"a\.xml: <size>: width is 'abc', not a number"):
        read_region(path, tmp_path / "a.png", (8, 8))
