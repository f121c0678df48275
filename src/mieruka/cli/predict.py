"""``mieruka predict``: class, probability and verdict of images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mieruka.cli._common import (
    add_common,
    add_engine,
    add_out_file,
    add_provider,
    add_tta,
    engine_options,
    number_in,
)

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    from mieruka.inference import DECODE_CHOICES

    p = sub.add_parser(
        "predict",
        help="class, probability and verdict of images",
        description="Classify images (files or folders, searched recursively) with a .safetensors model (PyTorch) "
        "or a file from 'mieruka export': .onnx (ONNX Runtime, --provider) or OpenVINO .xml; same preprocessing. "
        "Usage: mieruka predict MODEL IMAGE_OR_DIR... or mieruka predict --model MODEL IMAGE_OR_DIR...",
    )
    p.add_argument("--model", type=Path, help="the model (.safetensors, .onnx or .xml), instead of the first argument")
    p.add_argument("paths", nargs="+", type=Path, metavar="[MODEL] IMAGE_OR_DIR")
    add_out_file(
        p, "write rows here as they are made: CSV, or Parquet for a .parquet name (else print a table)", required=False
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: an error row)")
    p.add_argument("--resume", action="store_true", help="skip the images --out already holds and append the rest")
    p.add_argument("--threshold", type=number_in(0, 1), help="NG-probability threshold (default: the model's)")
    p.add_argument(
        "--decode",
        choices=DECODE_CHOICES,
        default="auto",
        help="where JPEGs are decoded: on the model's device (GPU) or with Pillow on the CPU (default auto: on the "
        "GPU when the model runs on one)",
    )
    add_provider(p)
    add_tta(p)
    add_engine(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.predict import predict

    model, inputs = (args.model, args.paths) if args.model else (args.paths[0], args.paths[1:])
    if not inputs:
        raise ValueError("give the model and at least one image or folder: mieruka predict MODEL IMAGE_OR_DIR...")
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out: the rows of the earlier run are read from it")
    run = predict(
        model,
        inputs,
        out=args.out,
        threshold=args.threshold,
        device=args.device,
        tta=args.tta,
        progress=not args.quiet,
        strict=args.strict,
        resume=args.resume,
        keep=args.out is None,
        engine=engine_options(args),
        decode=args.decode,
        provider=args.provider,
    )
    if run.runtime:
        print(f"runtime: {run.runtime}", file=sys.stderr)
    if run.threshold is not None:
        source = "--threshold" if args.threshold is not None else "the model's"
        rule = f"NG when the predicted class is NG or P(NG) >= {run.threshold:.4f} ({source})"
        print(f"verdict: {rule}", file=sys.stderr)
    if args.out is None:
        print("image\tclass\tprobability\tP(NG)\tverdict\terror")
        for r in run:
            if r.error:
                print(f"{r.image}\t\t\t\t\t{r.error}")
            else:
                print(f"{r.image}\t{r.label}\t{r.probability:.4f}\t{r.ng_probability:.4f}\t{r.verdict}\t")
    else:
        skipped = f", {run.skipped} done before (--resume)" if run.skipped else ""
        print(f"{run.images} images: {run.ok} OK, {run.ng} NG, {run.errors} unreadable{skipped}; written to {args.out}")
    if run.errors:
        print(f"warning: {run.errors} image(s) could not be read (the first: {run.first_error})", file=sys.stderr)
