"""Defect regions from box annotations — Pascal VOC XML, COCO JSON, YOLO txt — rasterized to masks.

A region file may stand wherever a mask image may: in a manifest's ``mask`` column, or mirrored under ``masks/`` in
a class-per-folder tree (``masks/<class>/<stem>.xml`` or ``.txt``). A COCO file covers many images; the entry of an
image is found by its file name. :func:`read_region` reads any of them, and mask images, as a boolean (H, W) mask at
the image's original size.

Coordinates: VOC boxes are 1-based and inclusive (``xmin=1, xmax=W`` is the whole width); COCO boxes are
``[x, y, width, height]`` in 0-based pixel-edge coordinates, and COCO polygons are filled too; YOLO lines are
``class cx cy w h`` normalized to 0–1. A box is rasterized to every pixel it covers at least half of; boxes reaching
outside the image are clipped. Malformed files raise :class:`DataError` naming the file and the entry at fault.
"""

from __future__ import annotations

import functools
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mieruka.data.csvfile import read_user_text
from mieruka.errors import DataError

__all__ = [
    "ANNOTATION_EXTENSIONS",
    "BOX_FILE_EXTENSIONS",
    "MASK_IMAGE_EXTENSIONS",
    "Box",
    "box_source",
    "find_region_file",
    "rasterize",
    "read_coco",
    "read_region",
    "read_voc",
    "read_yolo",
]

ANNOTATION_EXTENSIONS = frozenset({".xml", ".json", ".txt"})
"""File endings read as box annotations (VOC, COCO, YOLO) rather than as mask images."""

BOX_FILE_EXTENSIONS = (".xml", ".txt")
"""Box files that cover one image each and are found by its stem: Pascal VOC, then YOLO."""

MASK_IMAGE_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
"""Mask image endings looked for beside a stem, in this order (lossless first)."""


def find_region_file(
    folder: Path, stem: str, extensions: tuple[str, ...] = (*MASK_IMAGE_EXTENSIONS, *BOX_FILE_EXTENSIONS)
) -> Path | None:
    """The first ``folder/<stem><ext>`` that exists among ``extensions`` (a mask image, then a box file)."""
    if not folder.is_dir():
        return None
    for ext in extensions:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def box_source(boxes: Path, image: Path) -> Path | None:
    """The annotation file that covers ``image`` under ``--boxes``: a COCO ``.json`` file with an entry for it, or
    the image's ``<stem>.xml`` / ``<stem>.txt`` in a folder (None: the image has no entry)."""
    if boxes.is_file():
        if boxes.suffix.lower() != ".json":
            raise DataError(f"--boxes {boxes}: give a COCO .json file or a folder of VOC .xml / YOLO .txt files")
        try:
            read_coco(boxes, image)
        except DataError as exc:
            if "no entry" in str(exc):
                return None
            raise
        return boxes
    if not boxes.is_dir():
        raise DataError(f"--boxes {boxes}: no such file or folder")
    return find_region_file(boxes, image.stem, BOX_FILE_EXTENSIONS)


@dataclass(frozen=True)
class Box:
    """An axis-aligned region in pixel-edge coordinates: it covers x0 ≤ x < x1, y0 ≤ y < y1 (floats)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""
    polygon: tuple[tuple[float, float], ...] = ()


def rasterize(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """Boxes (and polygons) → (H, W) bool mask; a pixel is inside when its center is."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for b in boxes:
        if b.polygon:
            img = Image.new("1", (w, h), 0)
            ImageDraw.Draw(img).polygon([(x - 0.5, y - 0.5) for x, y in b.polygon], fill=1, outline=1)
            mask |= np.asarray(img, dtype=bool)
            continue
        # pixel i (center i + 0.5) is inside when x0 ≤ i + 0.5 < x1
        c0, c1 = max(0, math.ceil(b.x0 - 0.5)), min(w, math.ceil(b.x1 - 0.5))
        r0, r1 = max(0, math.ceil(b.y0 - 0.5)), min(h, math.ceil(b.y1 - 0.5))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def _number(text: str | None, path: Path, where: str, field: str) -> float:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        raise DataError(f"{path}: {where}: {field} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: {where}: {field} is missing or not a finite number")
    return value


def _check_box(path: Path, where: str, x0: float, y0: float, x1: float, y1: float) -> None:
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"{path}: {where}: the box is empty or inverted ({x0:g}, {y0:g}) – ({x1:g}, {y1:g})")


def read_voc(path: str | os.PathLike[str]) -> list[Box]:
    """The boxes of one Pascal VOC XML file."""
    return _parse_voc(Path(path))[1]


def _parse_voc(path: Path) -> tuple[tuple[float, float] | None, list[Box]]:
    """The (width, height) the file's ``<size>`` states (None when absent or zero), and its boxes."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: not a readable Pascal VOC XML file ({exc})") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: the root element is <{root.tag}>, not <annotation> (Pascal VOC)")
    boxes = []
    for n, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"object {n}" + (f" ({name})" if name else "")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{path}: {where}: no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bnd.findtext(k), path, where, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive pixel indices → pixel edges
        x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
        _check_box(path, where, x0, y0, x1, y1)
        boxes.append(Box(x0, y0, x1, y1, name))
    return _voc_size(root, path), boxes


def _voc_size(root: ET.Element, path: Path) -> tuple[float, float] | None:
    size = root.find("size")
    if size is None:
        return None
    w, h = size.findtext("width"), size.findtext("height")
    if not w or not h:
        return None
    width, height = _number(w, path, "<size>", "width"), _number(h, path, "<size>", "height")
    return (width, height) if width > 0 else None


def read_yolo(path: str | os.PathLike[str], shape: tuple[int, int], names: list[str] | None = None) -> list[Box]:
    """The boxes of one YOLO txt file for an image of (H, W) ``shape``; ``names`` maps class ids to names."""
    path = Path(path)
    h, w = shape
    lines = read_user_text(path, "YOLO file").splitlines()
    boxes = []
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {n}"
        if len(parts) < 5:
            raise DataError(f"{path}: {where}: expected 'class cx cy w h', got {line.strip()!r}")
        if len(parts) > 5 and len(parts) % 2 == 0:
            raise DataError(f"{path}: {where}: a polygon needs pairs of coordinates, got {len(parts) - 1} numbers")
        try:
            cls = int(parts[0])
        except ValueError:
            raise DataError(f"{path}: {where}: the class id {parts[0]!r} is not an integer") from None
        values = [_number(v, path, where, "coordinate") for v in parts[1:]]
        if any(v < -0.01 or v > 1.01 for v in values):
            raise DataError(f"{path}: {where}: YOLO coordinates must be normalized to 0–1, got {line.strip()!r}")
        label = names[cls] if names and 0 <= cls < len(names) else str(cls)
        if len(values) == 4:
            cx, cy, bw, bh = values
            x0, x1, y0, y1 = (cx - bw / 2) * w, (cx + bw / 2) * w, (cy - bh / 2) * h, (cy + bh / 2) * h
            _check_box(path, where, x0, y0, x1, y1)
            boxes.append(Box(x0, y0, x1, y1, label))
        else:  # segmentation format: class x1 y1 x2 y2 ...
            pts = tuple((values[i] * w, values[i + 1] * h) for i in range(0, len(values), 2))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            boxes.append(Box(min(xs), min(ys), max(xs), max(ys), label, pts))
    return boxes


@functools.lru_cache(maxsize=8)
def _coco_index(path: Path, mtime: float) -> dict[str, tuple[tuple[int, int] | None, list[Box]]]:
    """file name (and base name) → ((H, W) if given, boxes) for one COCO file."""
    try:
        data = json.loads(read_user_text(path, "COCO JSON file"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: a COCO file needs an 'images' list (and 'annotations')")
    for listed in ("categories", "annotations"):
        if not isinstance(data.get(listed, []), list):
            raise DataError(f"{path}: '{listed}' must be a list, got {type(data[listed]).__name__}")
    cats = {c.get("id"): str(c.get("name", c.get("id"))) for c in data.get("categories", []) if isinstance(c, dict)}
    images: dict[object, tuple[str, tuple[int, int] | None]] = {}
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: images[{n}]: needs 'id' and 'file_name'")
        hw = None
        if "height" in im and "width" in im:
            where = f"images[{n}] ({im['file_name']})"
            h, w = (_number(str(im[k]), path, where, k) for k in ("height", "width"))
            if h <= 0 or w <= 0 or h != int(h) or w != int(w):
                raise DataError(f"{path}: {where}: height and width must be positive whole numbers, got {h:g}×{w:g}")
            hw = (int(h), int(w))
        images[im["id"]] = (str(im["file_name"]), hw)
    boxes: dict[object, list[Box]] = {k: [] for k in images}
    for n, ann in enumerate(data.get("annotations", [])):
        where = f"annotations[{n}]" + (f" (id {ann.get('id')})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise DataError(f"{path}: {where}: its image_id is missing or names no image of the file")
        label = cats.get(ann.get("category_id"), str(ann.get("category_id", "")))
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
            for poly in seg:
                if len(poly) < 6 or len(poly) % 2:
                    raise DataError(f"{path}: {where}: a polygon needs at least 3 (x, y) pairs")
                vals = [_number(str(v), path, where, "segmentation") for v in poly]
                pts = tuple((vals[i], vals[i + 1]) for i in range(0, len(vals), 2))
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                boxes[ann["image_id"]].append(Box(min(xs), min(ys), max(xs), max(ys), label, pts))
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{path}: {where}: 'bbox' must be [x, y, width, height]")
        x, y, bw, bh = (_number(str(v), path, where, "bbox") for v in bbox)
        _check_box(path, where, x, y, x + bw, y + bh)
        boxes[ann["image_id"]].append(Box(x, y, x + bw, y + bh, label))
    index: dict[str, tuple[tuple[int, int] | None, list[Box]]] = {}
    for key, (name, hw) in images.items():
        index[name] = (hw, boxes[key])
        index.setdefault(Path(name).name, (hw, boxes[key]))
    return index


def read_coco(path: str | os.PathLike[str], image: str | os.PathLike[str]) -> tuple[tuple[int, int] | None, list[Box]]:
    """The (H, W) the COCO file states (if any) and the boxes of ``image`` (matched by file name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    index = _coco_index(path, path.stat().st_mtime)
    image = Path(image)
    for key in (image.as_posix(), image.name):
        if key in index:
            return index[key]
    raise DataError(f"{path}: no entry in 'images' has the file name {image.name!r}")


def read_region(
    path: str | os.PathLike[str], image_path: str | os.PathLike[str], image_shape: tuple[int, int]
) -> np.ndarray:
    """The defect region of an image as an (H, W) bool mask, from a mask image or a VOC/COCO/YOLO file."""
    from mieruka.data.images import read_mask

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANNOTATION_EXTENSIONS:
        return read_mask(path, image_path, image_shape)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found (for {image_path})")
    if suffix == ".xml":
        stated_wh, boxes = _parse_voc(path)
        if stated_wh is not None and (int(stated_wh[1]), int(stated_wh[0])) != tuple(image_shape):
            raise DataError(
                f"{path}: <size> says {int(stated_wh[0])}×{int(stated_wh[1])} pixels but the image {image_path} is "
                f"{image_shape[1]}×{image_shape[0]}"
            )
    elif suffix == ".txt":
        boxes = read_yolo(path, image_shape)
    else:
        stated, boxes = read_coco(path, image_path)
        if stated is not None and tuple(stated) != tuple(image_shape):
            raise DataError(
                f"{path}: the entry of {Path(image_path).name} says {stated[1]}×{stated[0]} pixels but the image is "
                f"{image_shape[1]}×{image_shape[0]}"
            )
    return rasterize(boxes, image_shape)
