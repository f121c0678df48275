"""``mieruka serve``: the model behind an HTTP API and a web page."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_listen, add_provider, int_at_least, number_in

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    from mieruka.explain.graph import EXPORT_METHODS

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP with a web page",
        description="Serve a model (.onnx from 'mieruka export', run by ONNX Runtime, or .safetensors, run by "
        "PyTorch): POST /v1/predict (multipart field 'files', one or several images) returns class, "
        "probabilities, OK/NG verdict and the heatmap overlay as base64 PNG; GET /v1/model, GET /healthz; API "
        "docs at /docs; a web page at /. Oversized uploads get 413, non-images 415, corrupt images 422.",
    )
    p.add_argument("model", type=Path, metavar="MODEL_OR_ONNX", help="a .onnx or .safetensors model")
    add_listen(p, 8000)
    p.add_argument(
        "--api-key",
        help="require this key in the X-API-Key header for /v1/* (default: $MIERUKA_API_KEY, else none)",
    )
    p.add_argument(
        "--method",
        choices=EXPORT_METHODS,
        help="CAM method for a .safetensors model (an .onnx file carries its own; default: the model's stored "
        "method where the graph can compute it, else the best such candidate of its selection table)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=number_in(0, 1 << 20, low_open=True),
        default=32.0,
        help="largest request body in MiB (default 32)",
    )
    p.add_argument("--max-images", type=int_at_least(1), default=16, help="most images per request (default 16)")
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        help="ONNX Runtime threads per request (default: one per core, divided among the workers)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=1,
        help="server processes, each with its own copy of the model (default 1; one per core serves many "
        "concurrent clients faster)",
    )
    p.add_argument("--device", default="auto", help="cpu or cuda for a .safetensors model (default cpu)")
    add_provider(p)
    g = p.add_argument_group("the line's record")
    g.add_argument(
        "--record",
        metavar="URL",
        help="record every answered image: sqlite:///PATH (a file, WAL) or postgresql://USER@HOST/DB (default: "
        "nothing is kept); read it with 'mieruka records' and 'mieruka monitor'",
    )
    g.add_argument(
        "--keep",
        choices=("all", "ng", "none"),
        default="ng",
        help="which images the record keeps as files, with their overlays (default ng)",
    )
    g.add_argument(
        "--record-files",
        type=Path,
        metavar="DIR",
        help="folder of the kept files, with the journal of answers not yet in the database beside it (DIR.pending); "
        "default: beside the SQLite file; a PostgreSQL record needs it",
    )
    g.add_argument(
        "--retain-days", type=number_in(0, 1e6, low_open=True), help="remove kept files older than this many days"
    )
    g.add_argument(
        "--retain-gb", type=number_in(0, 1e9, low_open=True), help="keep at most this many GiB of files (oldest go)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("MIERUKA_API_KEY") or None,
        method=args.method,
        device="cpu" if args.device == "auto" else args.device,
        max_upload_mb=args.max_upload_mb,
        max_images=args.max_images,
        threads=args.threads,
        workers=args.workers,
        provider=args.provider,
        record=args.record,
        keep=args.keep,
        record_files=None if args.record_files is None else str(args.record_files),
        retain_days=args.retain_days,
        retain_gb=args.retain_gb,
    )
