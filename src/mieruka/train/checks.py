"""Checks before training: every image and mask of every split must be usable, or the run stops (``--skip-bad``
lists and skips them instead)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mieruka._io import write_csv
from mieruka.config import TrainConfig
from mieruka.data.annotations import ANNOTATION_EXTENSIONS, read_region
from mieruka.data.dataset import Sample
from mieruka.data.images import image_size
from mieruka.data.store import BadFile
from mieruka.errors import DataError

__all__ = ["mask_problems", "preflight"]


def mask_problems(samples: Sequence[Sample], sizes: Sequence[tuple[int, int]], bad_images: set[Path]) -> list[BadFile]:
    """Masks that are missing, unreadable, or of another size than their image, and box annotations that cannot be
    read or do not fit their image (both files named)."""
    problems = []
    for sample, (h, w) in zip(samples, sizes, strict=True):
        if sample.mask is None or sample.image in bad_images:
            continue
        if sample.mask.suffix.lower() in ANNOTATION_EXTENSIONS:  # boxes: parse them, check them against the image
            try:
                read_region(sample.mask, sample.image, (h, w))
            except DataError as exc:
                problems.append(BadFile(sample.image, f"its annotation: {exc}"))
            continue
        try:
            mw, mh = image_size(sample.mask)
        except DataError as exc:
            problems.append(BadFile(sample.image, f"its mask: {exc}"))
            continue
        if (mh, mw) != (h, w):
            problems.append(
                BadFile(
                    sample.image,
                    f"its mask {sample.mask} is {mw}×{mh} pixels but the image is "
                    f"{w}×{h}; a mask must have exactly the size of its image",
                )
            )
    return problems


def preflight(
    samples: Sequence[Sample],
    sizes: Sequence[tuple[int, int]],
    unreadable: Sequence[BadFile],
    cfg: TrainConfig,
    run: Path,
    write: bool = True,
) -> set[Path]:
    """Stop (or, with ``skip_bad``, report) before training when any image or mask of any split cannot be used;
    ``write``: list them in ``run/bad_images.csv``."""
    bad = [*unreadable, *mask_problems(samples, sizes, {b.path for b in unreadable})]
    if not bad:
        return set()
    listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
    more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
    if write:
        write_csv(run / "bad_images.csv", ("image", "reason"), [(str(b.path), b.reason) for b in bad])
    if not cfg.skip_bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be used; nothing was trained (list in {run / 'bad_images.csv'}):\n"
            f"{listing}{more}\nFix or remove them, or pass --skip-bad to train without them."
        )
    print(f"skipping {len(bad)} image(s) that cannot be used (--skip-bad):\n{listing}{more}")
    return {b.path for b in bad}
