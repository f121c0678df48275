"""``mieruka evaluate``: per-class and OK/NG metrics on a split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mieruka._text import display_width, ljust
from mieruka.cli._common import (
    add_common,
    add_layout,
    add_model,
    add_provider,
    add_split,
    add_tracker,
    add_tta,
    fmt_rate,
    int_at_least,
    number_in,
    track_figures,
)

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="per-class and OK/NG metrics on a split",
        description="Evaluate MODEL on one split of DATA: accuracy, balanced accuracy, per-class "
        "precision/recall/F1, confusion matrix, escape and overkill rates, and an NG threshold chosen "
        "on the validation split. Writes DIR/metrics.json, predictions.csv, confusion_matrix.png.",
    )
    add_model(p, "model: .safetensors, or a .onnx / OpenVINO .xml from mieruka export (the shipped file, checked)")
    p.add_argument("data", type=Path, help="class-per-folder tree or manifest CSV")
    add_split(p, "test")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--max-escape", type=number_in(0, 1), default=0.0, help="escape-rate target for the threshold (default 0)"
    )
    p.add_argument(
        "--neighbors",
        type=int_at_least(0),
        default=0,
        metavar="K",
        help="also list every image's K nearest training images in the model's features (neighbors.csv) and draw "
        "the misclassified ones beside theirs (neighbors.png); default 0 = off",
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable image (default: list it and go on)"
    )
    add_provider(p)
    add_tracker(p, run_id=True)
    add_layout(p)
    add_tta(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.evaluate import evaluate

    ev = evaluate(
        args.model,
        args.data,
        args.out,
        split=args.split,
        max_escape=args.max_escape,
        device=args.device,
        tta=args.tta,
        neighbors=args.neighbors,
        strict=args.strict,
        progress=not args.quiet,
        provider=args.provider,
        layout=args.layout,
    )
    m = ev.metrics
    files = [args.out / "metrics.json", args.out / "predictions.csv"]
    track_figures(args, ev.model_summary, m.to_json(), files, f"eval_{m.split}")
    print(f"{m.split}: {m.images} images  accuracy {m.accuracy:.4f}  balanced accuracy {m.balanced_accuracy:.4f}")
    width = max(24, *(display_width(c) for c in m.per_class))
    for c, pc in m.per_class.items():
        print(
            f"  {ljust(c, width)} precision {pc.precision:.3f}  recall {pc.recall:.3f}  f1 {pc.f1:.3f}  n={pc.support}"
        )
    g, by_class = m.gate_at_threshold, m.gate_by_class
    level = f"{100 * m.confidence:.0f} %"
    print(
        f"OK/NG by predicted class: escape {fmt_rate(by_class.escape_rate)} ({level} upper bound "
        f"{fmt_rate(by_class.escape_upper_bound)})  overkill {fmt_rate(by_class.overkill_rate)}"
    )
    print(
        f"OK/NG gate (class NG, or P(NG) >= {m.threshold:.4f}, chosen on {m.threshold_chosen_on} for escape <= "
        f"{m.max_escape}; a new defect escapes with probability <= {fmt_rate(m.escape_bound)}): escape "
        f"{fmt_rate(g.escape_rate)} ({level} upper bound {fmt_rate(g.escape_upper_bound)})  overkill "
        f"{fmt_rate(g.overkill_rate)}"
    )
    print(f"results: {ev.out_dir / 'metrics.json'}, {ev.out_dir / 'confusion_matrix.png'}")
    if m.unreadable:
        first = m.unreadable[0]
        print(
            f"warning: {len(m.unreadable)} image(s) could not be read and are left out of the figures (the "
            f"first: {first.image}: {first.reason}); see predictions.csv",
            file=sys.stderr,
        )
    if m.neighbors is not None:
        n = m.neighbors
        sheet = f", {ev.out_dir / 'neighbors.png'}" if n.errors else ""
        print(
            f"nearest training images: {ev.out_dir / 'neighbors.csv'}{sheet}; of {n.errors} misclassified images, "
            f"{n.errors_nearest_labelled_as_predicted} have a nearest training image labelled as predicted "
            "(check those labels)"
        )
