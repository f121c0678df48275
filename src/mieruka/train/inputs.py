"""What a run trains on: the data set checked class by class, every image decoded once, bad files stopped or
skipped, and the run's config and split written."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mieruka._io import write_json
from mieruka.config import TrainConfig
from mieruka.data.csvfile import read_csv_rows
from mieruka.data.dataset import Dataset, describe, load_dataset
from mieruka.data.doctor import cheap_warnings
from mieruka.data.sample import Sample
from mieruka.data.store import ImageStore, scan_images
from mieruka.errors import DataError
from mieruka.train.checks import preflight
from mieruka.train.corrections import apply_corrections, describe_corrections
from mieruka.train.guide import GuideMasks, load_guide_masks

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """The indexed data of a run: the training and validation images in one store, their labels."""

    dataset: Dataset
    store: ImageStore
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    guide: GuideMasks | None = None


def load_training_data(
    data: str | os.PathLike[str],
    run: Path,
    cfg: TrainConfig,
    progress: bool,
    expected_classes: tuple[str, ...] | None = None,
    write: bool = True,
) -> TrainingData:
    """Index the data set, decode every image once, stop on bad files (or skip them), check every class can be
    trained and validated, and (``write``) write the run's config and split."""
    dataset = load_dataset(data, ok_classes=cfg.ok_classes or None, split_seed=cfg.split_seed, layout=cfg.layout)
    print(f"data: {dataset.layout}")
    dataset, corrections = _corrected(dataset, cfg)
    dataset, added = _with_records(dataset, cfg)
    if expected_classes is not None and tuple(dataset.classes) != tuple(expected_classes):
        raise DataError(
            f"--resume: {run} was trained on the classes {', '.join(expected_classes)}, but {data} has "
            f"{', '.join(dataset.classes)}; resume with the run's data, or start a new run"
        )
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if len(dataset.classes) < 2:
        raise DataError(
            f"{data}: only one class ({dataset.classes[0]}); a classifier needs at least two, e.g. the parts that "
            "pass and one kind of defect"
        )
    _require_trainable(data, dataset, "")
    if write:
        extra = {"corrections": corrections, "added_records": added}
        write_json(run / "config.json", {"data": str(data), "config": cfg.to_dict(),
                                         **{k: v for k, v in extra.items() if v is not None}})  # fmt: skip
    train_samples, val_samples = dataset.split("train"), dataset.split("val")
    samples = train_samples + val_samples
    store = ImageStore(
        [s.image for s in samples],
        cfg.image_size,
        cache_bytes=int(cfg.cache_gb * (1 << 30)),
        progress=progress,
        bit_depth=cfg.bit_depth,
        cache=cfg.cache,
    )
    if store.cache == "disk":
        print(f"image cache: on disk ({'reused' if store.reused else 'written'}), {store.location}")
    # Test images are not trained on, but a bad one would only surface at evaluation: check them now, uncached.
    test_samples = dataset.split("test")
    _, test_sizes, test_bad = scan_images(
        [s.image for s in test_samples],
        cfg.image_size,
        keep=False,
        desc="checking test images",
        progress=progress,
        bit_depth=cfg.bit_depth,
    )
    bad = preflight(
        [*samples, *test_samples], [*store.sizes, *test_sizes], [*store.bad, *test_bad], cfg, run, write=write
    )
    usable = dataset.without(bad)
    if bad:
        _require_trainable(data, usable, " after skipping the unusable images (--skip-bad)")
    _record_split(run, usable, resuming=expected_classes is not None, write=write)
    print(describe(usable))
    for warning in cheap_warnings(usable):  # the data doctor's quick checks (mieruka check runs them all)
        print(f"warning: {warning}", file=sys.stderr)
    no_val = [c for c in usable.classes if not any(s.label == c for s in usable.split("val"))]
    if no_val:
        print(
            f"warning: class(es) {', '.join(no_val)} have no validation image: the chosen epoch and the NG threshold "
            "do not see them",
            file=sys.stderr,
        )
    train_idx = np.array([i for i, s in enumerate(train_samples) if s.image not in bad], dtype=np.int64)
    guide = _guide_masks(dataset, samples, store, train_idx, cfg, progress) if cfg.guide != "none" else None
    return TrainingData(
        dataset=dataset,
        store=store,
        labels=np.array([dataset.label_index(s) for s in samples], dtype=np.int64),
        train_idx=train_idx,
        val_idx=np.array([len(train_samples) + i for i, s in enumerate(val_samples) if s.image not in bad]),
        guide=guide,
    )


def _record_split(run: Path, dataset: Dataset, *, resuming: bool, write: bool) -> None:
    """Write the run's ``split.csv`` (``write``), after checking that a resumed run's data split as it did."""
    if resuming:
        _check_same_split(run, dataset)
    if write:
        dataset.save_split(run / "split.csv")


def _check_same_split(run: Path, dataset: Dataset) -> None:
    """``--resume`` continues the run on the images it was split with: an image added, removed or moved to another
    split since (which would train on a former validation image, or validate on a trained one) is refused by name."""
    saved_path = run / "split.csv"
    if not saved_path.is_file():
        return
    _, rows = read_csv_rows(saved_path, required=("image",), what="split file")
    saved = {os.path.abspath(os.path.join(run, row["image"])): row.get("split", "") for _, row in rows}
    now = {os.path.abspath(s.image): s.split or "" for s in dataset.samples}
    changes = [f"{p} (removed)" for p in sorted(set(saved) - set(now))]
    changes += [f"{p} (new)" for p in sorted(set(now) - set(saved))]
    changes += [f"{p} ({saved[p]} → {now[p]})" for p in sorted(set(saved) & set(now)) if saved[p] != now[p]]
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise DataError(
            f"--resume: the data differ from the split the run in {run} was trained with (its split.csv): {shown}. "
            "Resume on the same images, or start a new run (--overwrite or another --out)"
        )


def _corrected(dataset: Dataset, cfg: TrainConfig) -> tuple[Dataset, dict[str, Any] | None]:
    """``--corrections``: the data set with a review's decisions applied, and their record (None without)."""
    if not cfg.corrections:
        return dataset, None
    dataset, record = apply_corrections(dataset, cfg.corrections)
    print(describe_corrections(record))
    return dataset, record


def _with_records(dataset: Dataset, cfg: TrainConfig) -> tuple[Dataset, dict[str, Any] | None]:
    """``--add-records``: the recorded images the decisions label, added to the training split (None without)."""
    if not cfg.add_records:
        if cfg.corrections:
            from mieruka.train.records import record_decisions

            if record_decisions(cfg.corrections):
                print(f"warning: {cfg.corrections} decides about recorded images (record:ID); they are added only with "
                      "--add-records URL", file=sys.stderr)  # fmt: skip
        return dataset, None
    if not cfg.corrections:
        raise DataError("--add-records needs --corrections DECISIONS_CSV: the decisions say which images, and labels")
    from mieruka.train.records import add_records, describe

    dataset, record = add_records(dataset, cfg.add_records, cfg.corrections, cfg.record_files or None)
    print(describe(record))
    return dataset, record


def _guide_masks(
    dataset: Dataset,
    samples: Sequence[Sample],
    store: ImageStore,
    train_idx: np.ndarray,
    cfg: TrainConfig,
    progress: bool,
) -> GuideMasks | None:
    """``--guide masks|auto``: the regions of the NG training images, with one line saying how many have one
    (``auto`` without any: None, and a line saying so)."""
    ng = [dataset.verdicts[s.label] == "NG" for s in samples]
    try:
        guide = load_guide_masks(samples, store.sizes, train_idx, ng, cfg.image_size, progress)
    except DataError:
        if cfg.guide == "masks":
            raise
        print("guide: off (no NG training image has a marked region)")
        return None
    marked = int((guide.slot >= 0).sum())
    print(f"guide: {marked} of {sum(ng[int(i)] for i in train_idx)} NG training images have a marked region")
    return guide


def _require_trainable(data: str | os.PathLike[str], dataset: Dataset, when: str) -> None:
    """Every class needs a training image, and the validation split an image, to train and choose an epoch."""
    train_samples = dataset.split("train")
    missing = [c for c in dataset.classes if not any(s.label == c for s in train_samples)]
    if missing:
        raise DataError(f"{data}: class(es) {', '.join(missing)} have no training image{when}")
    if not dataset.split("val"):
        raise DataError(f"{data}: the validation split is empty{when}; the best epoch cannot be chosen")
