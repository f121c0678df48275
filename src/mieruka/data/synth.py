"""A procedural inspection data set with exact defect masks: the built-in demo and the test fixture.

Every image is a textured surface (brushed metal, cast, or tile) drawn independently of its class, with at most
one kind of mark planted at a random place. Classes differ *only* in the mark, so a model that looks anywhere
but the mark cannot score well, and the mask says exactly where it should look.

=================== ======= ===================================================
class               verdict mark
=================== ======= ===================================================
good                OK      none
normal (scratch)    OK      a short, faint, hairline scratch (acceptable)
normal (dirt)       OK      a soft, low-contrast smudge that wipes off
scratch             NG      a long, deep scratch
crack               NG      a dark, jagged, branching line
blowhole            NG      one to three round pits with a bright rim
=================== ======= ===================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mieruka._io import write_csv

__all__ = ["CLASSES", "CLASSES_JA", "SynthResult", "make_image", "write_dataset"]

CLASSES = ("good", "normal (scratch)", "normal (dirt)", "scratch", "crack", "blowhole")
CLASSES_JA = ("良品", "正常(キズ)", "正常(汚れ)", "欠陥(キズ)", "欠陥(割れ)", "欠陥(巣穴)")
"""Japanese names for the same classes (``--names ja``), in the same order."""

_SLUGS = ("good", "normal_scratch", "normal_dirt", "scratch", "crack", "blowhole")


# ----------------------------------------------------------------------------------------------- surfaces


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a small random grid upsampled bicubically."""
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    big = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 127.5 - 1.0


def _brushed(rng: np.random.Generator, size: int) -> np.ndarray:
    streaks = rng.normal(0, 1, (size, 1)).astype(np.float32)
    streaks = np.repeat(streaks, size, axis=1) * 0.035
    grain = rng.normal(0, 0.02, (size, size)).astype(np.float32)
    surface = 0.62 + streaks + grain + 0.05 * _smooth_noise(rng, size, 3)
    return surface if rng.random() < 0.5 else surface.T


def _cast(rng: np.random.Generator, size: int) -> np.ndarray:
    return (
        0.5
        + 0.07 * _smooth_noise(rng, size, 6)
        + 0.03 * _smooth_noise(rng, size, 24)
        + rng.normal(0, 0.025, (size, size)).astype(np.float32)
    )


def _tile(rng: np.random.Generator, size: int) -> np.ndarray:
    surface = 0.55 + 0.05 * _smooth_noise(rng, size, 8) + rng.normal(0, 0.015, (size, size)).astype(np.float32)
    period = int(rng.integers(size // 4, size // 2))
    offset = int(rng.integers(0, period))
    lines = (np.arange(size) + offset) % period < max(2, size // 80)
    surface[lines, :] -= 0.12
    surface[:, lines] -= 0.12
    return surface


_SURFACES: tuple[Callable[[np.random.Generator, int], np.ndarray], ...] = (_brushed, _cast, _tile)


# ------------------------------------------------------------------------------------------------- marks


def _polyline(rng: np.random.Generator, size: int, length: float, jitter: float) -> list[tuple[float, float]]:
    x, y = rng.uniform(0.15, 0.85, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    n = 8
    pts = [(x, y)]
    for _ in range(n):
        angle += rng.normal(0, jitter)
        x += np.cos(angle) * length * size / n
        y += np.sin(angle) * length * size / n
        pts.append((x, y))
    return pts


def _draw(size: int, draw: Callable[[ImageDraw.ImageDraw], None], blur: float = 0.0) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    draw(ImageDraw.Draw(layer))
    if blur:
        layer = layer.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(layer, dtype=np.float32) / 255.0


def _mark(kind: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(delta, mask): the intensity change to add to the surface and the exact region it covers."""
    s = size / 224  # scale strokes with the image
    if kind == "good":
        zero = np.zeros((size, size), dtype=np.float32)
        return zero, zero > 0
    if kind in ("normal (scratch)", "scratch"):
        faint = kind == "normal (scratch)"
        pts = _polyline(rng, size, rng.uniform(0.08, 0.16) if faint else rng.uniform(0.35, 0.6), 0.08)
        width = max(1, round((1.5 if faint else rng.uniform(2.5, 3.5)) * s))
        alpha = _draw(size, lambda d: d.line(pts, fill=255, width=width, joint="curve"), blur=0.6 * s)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        amp = rng.uniform(0.12, 0.16) if faint else rng.uniform(0.3, 0.45)
        return sign * amp * alpha, alpha > 0.25
    if kind == "normal (dirt)":
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.05, 0.1) * size
        alpha = _draw(size, lambda d: d.ellipse((cx - r, cy - r * 0.7, cx + r, cy + r * 0.7), fill=255), blur=r / 3)
        return -rng.uniform(0.16, 0.22) * alpha, alpha > 0.5
    if kind == "crack":
        main = _polyline(rng, size, rng.uniform(0.3, 0.5), 0.6)
        branches = []
        for _ in range(int(rng.integers(1, 3))):
            bx, by = main[int(rng.integers(2, len(main) - 1))]
            a = rng.uniform(0, 2 * np.pi)
            pts = [(bx, by)]
            for _ in range(4):
                a += rng.normal(0, 0.6)
                bx += np.cos(a) * 0.03 * size
                by += np.sin(a) * 0.03 * size
                pts.append((bx, by))
            branches.append(pts)
        width = max(1, round(rng.uniform(1.5, 2.5) * s))

        def crack(d: ImageDraw.ImageDraw) -> None:
            d.line(main, fill=255, width=width)
            for b in branches:
                d.line(b, fill=200, width=max(1, width - 1))

        alpha = _draw(size, crack, blur=0.4 * s)
        return -rng.uniform(0.3, 0.45) * alpha, alpha > 0.25
    if kind == "blowhole":
        holes = [(*rng.uniform(0.12, 0.88, 2) * size, rng.uniform(3, 7) * s) for _ in range(int(rng.integers(1, 4)))]

        def holes_of(grow: float) -> Callable[[ImageDraw.ImageDraw], None]:
            def draw(d: ImageDraw.ImageDraw) -> None:
                for x, y, r in holes:
                    d.ellipse((x - r * grow, y - r * grow, x + r * grow, y + r * grow), fill=255)

            return draw

        rim = _draw(size, holes_of(1.4), blur=0.8 * s)
        pit = _draw(size, holes_of(1.0), blur=0.6 * s)
        delta = 0.12 * rim - rng.uniform(0.35, 0.5) * pit - 0.12 * pit
        return delta, rim > 0.3
    raise ValueError(f"unknown synthetic class {kind!r}")


def make_image(kind: str, rng: np.random.Generator, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image of class ``kind``: ((size, size) uint8 grayscale, (size, size) bool mask)."""
    surface = _SURFACES[int(rng.integers(len(_SURFACES)))](rng, size)
    surface = surface * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)  # lighting varies part to part
    delta, mask = _mark(kind, rng, size)
    image = np.clip((surface + delta) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, mask


@dataclass(frozen=True)
class SynthResult:
    """Where a synthetic data set was written."""

    root: Path
    manifest: Path
    classes: tuple[str, ...]
    images: int


def write_dataset(
    out: str | os.PathLike[str],
    per_class: int = 60,
    *,
    seed: int = 0,
    size: int = 224,
    names: str = "en",
    progress: bool = True,
) -> SynthResult:
    """Write ``per_class`` images of every class as a class-per-folder tree with a mirrored ``masks/`` tree.

    Also writes ``manifest.csv`` (``image,label,mask``) beside them. Deterministic for a seed: image ``i`` of a
    class depends only on (seed, class, i), so a larger ``per_class`` extends a smaller one.

    Args:
        out: Output folder.
        per_class: Images per class.
        seed: Random seed.
        size: Side of the square images.
        names: ``en`` or ``ja`` class names (``ja`` exercises Unicode paths end to end).
        progress: Show a progress bar.
    """
    from tqdm.auto import tqdm

    if per_class < 1:
        raise ValueError(f"--per-class {per_class}: must be at least 1")
    if names not in ("en", "ja"):
        raise ValueError(f"--names {names!r}: choose en or ja")
    labels = CLASSES if names == "en" else CLASSES_JA
    root = Path(out)
    rows = []
    jobs = [(k, i) for k in range(len(CLASSES)) for i in range(per_class)]
    for k, i in tqdm(jobs, desc="synthesizing", disable=not progress, unit="img", leave=False):
        rng = np.random.default_rng([seed, k, i])
        image, mask = make_image(CLASSES[k], rng, size)
        rel = Path(labels[k]) / f"{_SLUGS[k]}_{i:04d}.png"
        mask_rel = Path("masks") / rel
        for path, arr in ((root / rel, image), (root / mask_rel, mask.astype(np.uint8) * 255)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, compress_level=1)
        rows.append((rel.as_posix(), labels[k], mask_rel.as_posix()))
    manifest = write_csv(root / "manifest.csv", ("image", "label", "mask"), rows)
    return SynthResult(root=root, manifest=manifest, classes=tuple(labels), images=len(rows))
