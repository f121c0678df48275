"""``mieruka synth``: the built-in example data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import int_at_least

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic defect data set with exact masks",
        description="Write a procedural inspection data set: textured surfaces with planted "
        "scratches, cracks, blowholes and dirt, as ROOT/<class>/*.png with masks in ROOT/masks/.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--per-class", type=int_at_least(1), default=60, help="images per class (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int_at_least(32), default=224, help="image side in pixels (default 224)")
    p.add_argument("--names", choices=("en", "ja"), default="en", help="English or Japanese class names")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.data.synth import write_dataset

    result = write_dataset(
        args.out, args.per_class, seed=args.seed, size=args.size, names=args.names, progress=not args.quiet
    )
    print(
        f"wrote {result.images} images of {len(result.classes)} classes to {result.root} "
        f"(masks in {result.root / 'masks'}, list in {result.manifest})"
    )
