"""The data doctor: ``mieruka check DATA`` — what is in a data set, and what would make its figures lie.

Before training (and as its own command) it reports, without training anything:

* images per class and split, class imbalance, classes missing from a split;
* unreadable files (each with its reason), image sizes, aspect ratios, bit depths and colour modes, masks per class;
* **exact duplicates** (the same file content, by SHA-256) and **near duplicates**: images whose ImageNet-pretrained
  backbone features (EfficientNet-Lite0 pooled features of a 128-px copy, the offline weights mieruka trains from)
  have a cosine similarity of at least :data:`NEAR_COSINE` — the same part photographed twice, or under other light;
* above all **cross-split conflicts**: a duplicate or near duplicate in another split under a *different* label,
  the leak that makes test figures lie (on Magnetic Tile, test photographs of a tile whose other photographs are
  in train under another label).

:func:`check_data` returns the report as a dict with the keys of ``check.json``; :func:`cheap_warnings` is the part
``train`` runs itself (counts, imbalance, exact duplicates).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mieruka.data.dataset import SPLITS, Dataset
from mieruka.data.images import bits_per_channel, read_image

__all__ = ["IMBALANCE_RATIO", "NEAR_COSINE", "cheap_warnings", "check_data", "exact_duplicates"]

NEAR_COSINE = 0.95
"""Near-duplicate threshold on the cosine similarity of pooled backbone features (docs/benchmarks-history.md#doctor)."""
IMBALANCE_RATIO = 10.0
"""A warning when the largest class has this many times the images of the smallest."""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def exact_duplicates(paths: Sequence[Path], threads: int = 8) -> list[list[int]]:
    """Groups (of indices into ``paths``, two or more) of files with the same content."""
    with ThreadPoolExecutor(threads) as pool:
        digests = list(pool.map(_sha256, paths))
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            groups.setdefault(d, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    c = Counter((s.label, s.split) for s in dataset.samples)
    return {label: {split: c[(label, split)] for split in SPLITS} for label in dataset.classes}


def cheap_warnings(dataset: Dataset, duplicates: list[list[int]] | None = None) -> list[str]:
    """What needs no decoding: imbalance, classes missing from a split, exact duplicates (across splits first)."""
    counts = _counts(dataset)
    out = []
    totals = {c: sum(v.values()) for c, v in counts.items()}
    big, small = max(totals, key=totals.__getitem__), min(totals, key=totals.__getitem__)
    if totals[small] and totals[big] / totals[small] >= IMBALANCE_RATIO:
        out.append(
            f"class imbalance: {big} has {totals[big]} images, {small} {totals[small]} "
            f"({totals[big] / totals[small]:.0f}×); balanced sampling helps, more {small} images help more"
        )
    for c, per in counts.items():
        missing = [s for s in SPLITS if per[s] == 0]
        if missing:
            out.append(f"class {c!r} has no image in the {', '.join(missing)} split(s)")
    samples = dataset.samples
    groups = exact_duplicates([s.image for s in samples]) if duplicates is None else duplicates
    across = [g for g in groups if len({samples[i].split for i in g}) > 1]
    relabeled = [g for g in groups if len({samples[i].label for i in g}) > 1]
    if across:
        out.append(f"{len(across)} group(s) of identical files sit in more than one split (the test split leaks)")
    if relabeled:
        out.append(f"{len(relabeled)} group(s) of identical files carry different labels")
    if groups and not across and not relabeled:
        out.append(f"{len(groups)} group(s) of identical files (same split, same label)")
    return out


def _describe_image(path: Path) -> dict[str, Any]:
    """Size, mode and bit depth from the header, and whether the whole image decodes."""
    try:
        with Image.open(path) as img:
            info = {"width": img.width, "height": img.height, "mode": img.mode, "bits": bits_per_channel(img)}
        read_image(path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return {"error": str(exc)}
    except Exception as exc:  # DataError and the decoders' own errors: a bad file, named with its reason
        return {"error": str(exc).removeprefix(f"{path}: ")}
    return info


def _near_pairs(feats: np.ndarray, threshold: float, block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (i < j) with cosine ≥ ``threshold``, by blocks of the similarity matrix."""
    pairs = []
    for start in range(0, len(feats), block):
        sims = feats[start : start + block] @ feats.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols, strict=True):
            i = start + int(r)
            if i < c:
                pairs.append((i, int(c), float(sims[r, c])))
    return pairs


Features = Callable[[Sequence[Path], bool], np.ndarray]
"""Unit-length image features for near-duplicate search: ``features(paths, progress)`` → (N, D). The data layer
knows no model: the caller gives them (``mieruka check``: :func:`mieruka.neighbors.backbone_features`)."""


def check_data(
    dataset: Dataset, *, features: Features | None = None, threshold: float = NEAR_COSINE, progress: bool = True
) -> dict[str, Any]:
    """The report of ``check.json`` for ``dataset`` (see the module's description); near duplicates only with
    ``features``."""
    samples = list(dataset.samples)
    paths = [s.image for s in samples]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        described = list(pool.map(_describe_image, paths))
    bad = [{"image": str(p), "reason": d["error"]} for p, d in zip(paths, described, strict=True) if "error" in d]
    good = [i for i, d in enumerate(described) if "error" not in d]
    duplicates = exact_duplicates(paths)

    def entry(i: int) -> dict[str, Any]:
        s = samples[i]
        return {"image": str(s.image), "label": s.label, "split": s.split}

    near_pairs: list[tuple[int, int, float]] = []
    if features is not None and good:
        feats = features([paths[i] for i in good], progress)
        near_pairs = [(good[a], good[b], c) for a, b, c in _near_pairs(feats, threshold)]
    exact_sets = {frozenset(g) for g in duplicates}
    near_list: list[dict[str, Any]] = [
        {"a": entry(i), "b": entry(j), "cosine": round(c, 4)}
        for i, j, c in near_pairs
        if not any({i, j} <= g for g in exact_sets)
    ]
    conflicts: list[dict[str, Any]] = [
        {"kind": "exact", "images": [entry(i) for i in g]}
        for g in duplicates
        if len({samples[i].split for i in g}) > 1 and len({samples[i].label for i in g}) > 1
    ] + [
        {"kind": "near", "a": p["a"], "b": p["b"], "cosine": p["cosine"]}
        for p in near_list
        if p["a"]["split"] != p["b"]["split"] and p["a"]["label"] != p["b"]["label"]
    ]
    warnings = list(dataset.warnings) + cheap_warnings(dataset, duplicates)
    if bad:
        warnings.append(f"{len(bad)} image(s) cannot be read (bad_files)")
    if near_list:
        warnings.append(f"{len(near_list)} near-duplicate pair(s) (cosine ≥ {threshold})")
    if conflicts:
        warnings.append(
            f"{len(conflicts)} duplicate(s) across splits with different labels (cross_split_conflicts): the same "
            "part is taught one way and tested another; test figures on them do not measure generalization"
        )
    return {
        "data": str(dataset.source),
        "layout": dataset.layout,
        "images": len(samples),
        "classes": list(dataset.classes),
        "counts": _counts(dataset),
        "bad_files": bad,
        "image_stats": _image_stats([described[i] for i in good], [samples[i].label for i in good]),
        "masks": {c: sum(1 for s in samples if s.label == c and s.mask is not None) for c in dataset.classes},
        "duplicates": [[entry(i) for i in g] for g in duplicates],
        "near_duplicates": near_list,
        "near_threshold": threshold if features is not None else None,
        "cross_split_conflicts": conflicts,
        "warnings": warnings,
    }


def _image_stats(described: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    if not described:
        return {}
    w = np.array([d["width"] for d in described])
    h = np.array([d["height"] for d in described])
    aspect = w / np.maximum(h, 1)
    return {
        "width": {"min": int(w.min()), "median": float(np.median(w)), "max": int(w.max())},
        "height": {"min": int(h.min()), "median": float(np.median(h)), "max": int(h.max())},
        "aspect_ratio": {"min": round(float(aspect.min()), 3), "max": round(float(aspect.max()), 3)},
        "modes": dict(Counter(d["mode"] for d in described)),
        "bit_depths": {str(k): v for k, v in Counter(d["bits"] for d in described).items()},
    }
