"""Splits: the names a data set's images are divided into, and the seeded stratified rule used when none is given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mieruka.errors import DataError

__all__ = ["SPLITS", "SPLIT_CHOICES", "stratified_split"]

SPLITS = ("train", "val", "test")
SPLIT_CHOICES = (*SPLITS, "all")
"""What ``--split`` accepts: one split, or ``all`` of them."""


def stratified_split(
    labels: Sequence[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> list[str]:
    """Assign ``train``/``val``/``test`` per class in the given proportions, reproducibly for a seed.

    Every class gets at least one image in each split with a non-zero fraction, so a class needs at least as many
    images as there are such splits.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions {fractions} must be three non-negative numbers that sum to 1")
    out = [""] * len(labels)
    needed = sum(1 for f in fractions if f > 0)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < needed:
            raise DataError(
                f"class {label!r} has {len(idx)} image(s); a train/val/test split needs at least {needed} per class "
                "(add images, or give the split yourself in a manifest CSV's split column)"
            )
        rng = np.random.default_rng([seed, *label.encode("utf-8")])
        order = [idx[j] for j in rng.permutation(len(idx))]
        n = len(order)
        n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
        n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
        if fractions[0] == 0:  # no training share: val and test divide the class (rounding may not overshoot)
            n_val = min(n_val, n - (1 if fractions[2] > 0 else 0))
            n_test = n - n_val
        n_train = n - n_val - n_test
        if fractions[0] > 0 and n_train < 1:
            n_train, n_val = 1, n_val - 1 if n_val > 1 else n_val
            n_test = n - n_train - n_val
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        for i, name in zip(order, names, strict=True):
            out[i] = name
    return out
