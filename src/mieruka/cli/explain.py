"""``mieruka explain``: heatmaps of where the evidence is, with the paper's input | heatmap panels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mieruka.cli._common import (
    add_common,
    add_engine,
    add_layout,
    add_split,
    engine_options,
    int_at_least,
    method_spec,
    number_in,
)

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    from mieruka.explain.methods import METHODS
    from mieruka.explain.scaling import NORMALIZATIONS

    p = sub.add_parser(
        "explain",
        help="heatmaps of where the evidence is, with the paper's input | heatmap panels",
        description="Explain predictions with a CAM-family heatmap (red = evidence, blue = none). By default: every "
        "validation image of DATA, the map of its true class, a panel captioned 'true: X / predicted: Y (p=…)'. "
        "Writes DIR/panels/*.png, DIR/maps.npz (raw float16 maps), DIR/grid.png and DIR/manifest.json. Methods: "
        + "; ".join(f"{n} ({c.paper})" for n, c in METHODS.items()),
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="DATA_OR_IMAGES",
        help="a data set (folder tree of the model's classes or manifest CSV) or image files/folders",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--method",
        type=method_spec,
        help="a method or NAME[:LAYER+LAYER…][/mean|product] spec; default: the method stored with the model (chosen "
        "on its validation regions by train; gradcam for older files)",
    )
    p.add_argument(
        "--target",
        default="true",
        help="true (default), pred, ng (evidence for rejecting), all (every class) or a class name",
    )
    add_split(p, "val", "split of a data set to explain")
    p.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="module to explain (repeatable or comma-separated; several are fused); default: the last "
        "convolutional block",
    )
    p.add_argument(
        "--normalize",
        default="per-image",
        choices=NORMALIZATIONS,
        help="display scaling: per-image min–max, or one scale shared by all images",
    )
    p.add_argument("--alpha", type=number_in(0, 1), default=0.5, help="heatmap opacity in the overlay (default 0.5)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="images per batch (default 16)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: list it)")
    add_engine(p)
    add_layout(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.explain.run import run_explain

    layers = [name for item in args.layer or [] for name in item.split(",") if name]
    result = run_explain(
        args.model,
        args.inputs,
        args.out,
        method=args.method,
        target=args.target,
        split=args.split,
        layers=layers or None,
        normalization=args.normalize,
        alpha=args.alpha,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
        strict=args.strict,
        engine=engine_options(args),
        layout=args.layout,
    )
    m = result.manifest
    fast = sum(r.get("fast_path", False) for r in m["images"])
    print(
        f"explained {len(m['images']) - m['errors']} images with {m['method']} on {', '.join(m['layers'])}"
        f"{' (' + m['fusion'] + ')' if len(m['layers']) > 1 else ''} "
        f"(target: {m['target']}; closed-form fast path for {fast})"
    )
    out = result.out_dir
    print(f"panels: {out / 'panels'}; maps: {out / 'maps.npz'}; manifest: {out / 'manifest.json'}")
    if m["errors"]:
        first = next(r for r in m["images"] if r["error"])
        print(
            f"warning: {m['errors']} image(s) could not be read (the first: {first['file']}: {first['error']})",
            file=sys.stderr,
        )
