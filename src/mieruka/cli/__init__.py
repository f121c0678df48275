"""The ``mieruka`` command: one module per subcommand, each holding its options beside its handler.

A command module has ``register(subparsers)``, which adds its parser and sets ``func`` to its handler; the handler
is a thin shell over one library function. :data:`COMMANDS` lists the modules in the order ``--help`` shows them.
See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from mieruka import __version__
from mieruka.cli import (
    audit,
    check,
    evaluate,
    explain,
    export,
    flag,
    info,
    monitor,
    predict,
    records,
    report,
    review,
    serve,
    synth,
    train,
)
from mieruka.cli._common import preflight

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    synth,
    check,
    train,
    evaluate,
    predict,
    export,
    serve,
    records,
    flag,
    monitor,
    explain,
    audit,
    report,
    review,
    info,
)


_EXTRAS = {
    "fastapi": "serve",
    "fastapi_offline": "serve",
    "uvicorn": "serve",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "ray": "ray",
    "pyarrow": "parquet",
    "mlflow": "mlflow",
    "sqlalchemy": "record",
    "psycopg": "postgres",
}
"""Optional packages → the extra of ``pyproject.toml`` that installs them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="mieruka",
        description="Explainable visual inspection: train a defect classifier on part images, evaluate it per class "
        "and as an OK/NG gate, and see why it decides.",
    )
    parser.add_argument("--version", action="version", version=f"mieruka {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a usage or data error, 1 on an internal
    error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    who = f"mieruka {args.command}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of several processes torchrun started: say which
        who += f" (rank {os.environ.get('RANK', '?')} of {os.environ['WORLD_SIZE']})"
    try:
        preflight(args)
        status = args.func(args)  # None, or a command's own exit status (monitor: 3 on an alert)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # MierukaError is a ValueError: bad input, said in one paragraph
        if args.debug:
            traceback.print_exc()
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a fault of mieruka's own, not of the input: say so, keep the traceback for --debug
        missing = (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""
        extra = _EXTRAS.get(missing.split(".")[0])
        if extra is not None:  # an optional extra that is not installed: say which one
            print(f"{who}: error: this needs {missing}, which is not installed: pip install 'mieruka[{extra}]'",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.debug:
            traceback.print_exc()
        print(
            f"{who}: internal error: {type(exc).__name__}: {exc} (run again with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    return int(status or 0)
