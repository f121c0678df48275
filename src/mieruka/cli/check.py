"""``mieruka check``: the data doctor (counts, unreadable files, duplicates and cross-split leaks)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_layout, number_in

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check a data set before training: counts, bad files, duplicates, leaks across splits",
        description="Read DATA (any layout train reads) and report images per class and split, unreadable files, "
        "image sizes, modes and bit depths, masks per class, exact duplicates (same file content) and near "
        "duplicates (ImageNet backbone features, cosine ≥ --near-threshold), above all duplicates across splits "
        "with different labels. Prints a table and the warnings; writes DIR/check.json with --out. Exit status 0 "
        "(warnings included), 2 when images cannot be read.",
    )
    p.add_argument("data", type=Path, help="the data set: a folder tree or a manifest CSV")
    p.add_argument("--out", type=Path, help="write DIR/check.json")
    add_layout(p)
    p.add_argument(
        "--near-threshold",
        type=number_in(0, 1),
        default=None,
        help="cosine similarity from which two images are near duplicates (default 0.95)",
    )
    p.add_argument("--no-near", action="store_true", help="skip the near-duplicate pass (no network is run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka._io import write_json
    from mieruka.data.dataset import describe, load_dataset
    from mieruka.data.doctor import NEAR_COSINE, check_data
    from mieruka.errors import DataError

    dataset = load_dataset(args.data, layout=args.layout or "auto")
    print(f"data: {dataset.layout}")
    print(describe(dataset))
    threshold = NEAR_COSINE if args.near_threshold is None else args.near_threshold
    from mieruka.neighbors import backbone_features

    features = None if args.no_near else backbone_features
    report = check_data(dataset, features=features, threshold=threshold, progress=not args.quiet)
    stats = report["image_stats"]
    if stats:
        w, h = stats["width"], stats["height"]
        print(
            f"images: {w['min']}–{w['max']} × {h['min']}–{h['max']} px (median {w['median']:.0f} × "
            f"{h['median']:.0f}), modes {stats['modes']}, bit depths {stats['bit_depths']}"
        )
    print(f"masks: {', '.join(f'{c} {n}' for c, n in report['masks'].items())}")
    for conflict in report["cross_split_conflicts"][:10]:
        if conflict["kind"] == "near":
            a, b = conflict["a"], conflict["b"]
            print(
                f"  leak: {a['image']} ({a['split']}, {a['label']}) ~ {b['image']} ({b['split']}, {b['label']}) "
                f"cosine {conflict['cosine']}"
            )
        else:
            print(
                "  leak: identical files "
                + ", ".join(f"{e['image']} ({e['split']}, {e['label']})" for e in conflict["images"])
            )
    if len(report["cross_split_conflicts"]) > 10:
        print(f"  … and {len(report['cross_split_conflicts']) - 10} more (check.json)")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    if args.out is not None:
        path = write_json(args.out / "check.json", report)
        print(f"written: {path}")
    if report["bad_files"]:
        first = report["bad_files"][0]
        raise DataError(
            f"{len(report['bad_files'])} image(s) cannot be read (the first: {first['image']}: {first['reason']})"
        )
