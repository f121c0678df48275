"""``mieruka audit``: is the model looking at the defect?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mieruka.cli._common import (
    add_common,
    add_engine,
    add_layout,
    add_split,
    add_tracker,
    engine_options,
    int_at_least,
    number_in,
    track_figures,
)

if TYPE_CHECKING:
    from mieruka.audit.summary import AuditSummary

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="is the model looking at the defect? localization metrics, triage, review list, HTML report",
        description="For every image of a split and every method: the explained map at the original size, its "
        "localization against the defect mask (energy inside, lift over uniform, pointing game, relevance rank "
        "accuracy, average precision, IoU/Dice, fragmentation) beside chance baselines, and a triage category. "
        "Writes DIR/audit.csv, DIR/summary.json, DIR/review.csv and DIR/report/index.html.",
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument("data", type=Path, help="data set with masks (folder tree or manifest CSV)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_split(p, "test")
    p.add_argument(
        "--method",
        help="comma-separated NAME[:LAYER+LAYER…][/mean|product]; the layer word multiscale means every stage from "
        "stride 8 down plus the last block; auto: choose by AP on the validation split's regions among the maps the "
        "exported graph computes (auto-all: among every candidate), audited beside gradcam, the choice in "
        "summary.json; default: the model's stored method beside gradcam",
    )
    p.add_argument(
        "--store-method",
        action="store_true",
        help="with --method auto: also write the chosen method into MODEL (the one audit option that changes the "
        "model file; its checksum is renewed)",
    )
    p.add_argument("--target", default="pred", help="pred (default), true, ng or a class name")
    p.add_argument(
        "--tolerance", type=int_at_least(0), default=15, help="pointing-game tolerance in pixels (default 15)"
    )
    p.add_argument(
        "--map-threshold",
        type=number_in(0, 1, low_open=True),
        default=0.5,
        help="fraction of the map's maximum above which pixels count as attended, for IoU/Dice/fragments (0.5)",
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="images per batch (default 16)")
    p.add_argument("--lang", choices=("en", "ja"), default="en", help="language of the HTML report")
    p.add_argument(
        "--boxes",
        type=Path,
        help="box annotations to use as the defect regions: a COCO .json file (entries by image file name) or a "
        "folder of Pascal VOC <stem>.xml / YOLO <stem>.txt files (default: the data set's masks)",
    )
    _add_faithfulness(p)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: error rows)")
    add_engine(p)
    add_tracker(p, run_id=True)
    add_layout(p)
    add_common(p)
    p.set_defaults(func=run)


def _add_faithfulness(p: argparse.ArgumentParser) -> None:
    from mieruka.audit.faithfulness import FILLS

    p.add_argument(
        "--faithfulness",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="also measure faithfulness on N images spread over the split: deletion/insertion AUC, average "
        "drop/increase, and the model-randomization sanity check (default 0: off; costs about 2 × (steps + 1) "
        "forward passes per image and method)",
    )
    p.add_argument("--steps", type=int_at_least(1), default=16, help="deletion/insertion steps (default 16)")
    p.add_argument(
        "--fill",
        choices=FILLS,
        default="blur",
        help="what deleted pixels become (default blur: a Gaussian blur, σ = 5 px at 224 px)",
    )


def run(args: argparse.Namespace) -> None:
    from mieruka.audit.faithfulness import FaithfulnessConfig
    from mieruka.audit.run import run_audit
    from mieruka.audit.triage import AuditConfig
    from mieruka.explain.spec import AUTO_CHOICES

    if args.store_method and not set(AUTO_CHOICES) & set((args.method or "").split(",")):
        raise ValueError("--store-method stores what --method auto chooses: give --method auto (or auto-all)")
    result = run_audit(
        args.model,
        args.data,
        args.out,
        split=args.split,
        methods=[m for m in args.method.split(",") if m] if args.method else None,
        target=args.target,
        config=AuditConfig(tolerance=args.tolerance, map_threshold=args.map_threshold),
        device=args.device,
        batch_size=args.batch_size,
        lang=args.lang,
        boxes=args.boxes,
        faithfulness=args.faithfulness,
        faithfulness_config=FaithfulnessConfig(steps=args.steps, fill=args.fill),
        progress=not args.quiet,
        strict=args.strict,
        engine=engine_options(args),
        layout=args.layout,
    )
    _print_summary(result.summary)
    if args.store_method:
        _store_method(args, result.summary)
    if args.tracker != "none":
        from mieruka.checkpoint import read_info

        files = [result.out_dir / "summary.json", result.out_dir / "audit.csv", result.out_dir / "review.csv"]
        figures = result.summary.to_json()["methods"]
        track_figures(args, read_info(args.model).summary, figures, files, f"audit_{args.split}")
    out = result.out_dir
    print(
        f"results: {out / 'audit.csv'}, {out / 'summary.json'}, {out / 'review.csv'}; "
        f"report: {out / 'report' / 'index.html'}"
    )
    errors = result.summary.errors
    if errors.images:
        print(f"warning: {errors.images} image(s) could not be audited (the first: {errors.first})", file=sys.stderr)


def _store_method(args: argparse.Namespace, summary: AuditSummary) -> None:
    from mieruka.audit.selection import store_selection

    selection = summary.method_selection
    if selection is None:  # run() only asks with --method auto, which always records a selection
        raise ValueError("--store-method: the audit chose no method to store")
    store_selection(args.model, selection)
    print(f"stored in {args.model}: explanation method {selection['chosen']}")


def _print_summary(summary: AuditSummary) -> None:
    print(f"explanation method of the model: {summary.chosen_method}")
    if summary.marked_ok_note:
        print(f"note: {summary.marked_ok_note}")
    print(
        f"{'method':<36}{'energy in':>10}{'lift':>8}{'pointing':>10}{'rank acc':>10}{'AP':>8}{'IoU@area':>10}"
        "   (defect images; uniform)"
    )
    for method in summary.methods:
        a = summary.figures(method)
        if a.with_region:
            u = a.baselines["uniform"]
            print(
                f"{method:<36}{a.energy_inside:>10.3f}{a.lift:>8.2f}{a.pointing_hit:>10.3f}"
                f"{a.relevance_rank:>10.3f}{a.average_precision:>8.3f}{a.iou_at_area:>10.3f}"
                f"   ({u['energy_inside']:.3f}, {u['pointing_hit']:.3f})"
            )
        print(f"  categories: {a.categories}")
        f = a.faithfulness
        if f is not None and summary.faithfulness is not None:
            check = summary.faithfulness.randomization_check[method]
            print(
                f"  faithfulness ({f.images} images): deletion AUC {f.deletion_auc:.3f}, insertion AUC "
                f"{f.insertion_auc:.3f}, average drop {f.average_drop_percent:.1f} %, increase "
                f"{f.increase_rate:.2f}; randomization check: mean |rank correlation| "
                f"{check.mean_abs_rank_correlation:.3f} ({'passed' if check.passed else 'FAILED'})"
            )
