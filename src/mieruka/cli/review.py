"""``mieruka review``: an audit's report served with a decision per review item."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_listen

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "review",
        help="review an audit in the browser: decide per image, kept in decisions.csv",
        description="Serve an audit's report (GET /) with a decision beside every review item: label correct, "
        "relabel to a class, region wrong, or exclude from training, with an optional comment. Each decision is "
        "appended to AUDIT_DIR/decisions.csv as it is made (the last per image wins; POST/GET /api/decisions). "
        "Retrain with: mieruka train DATA --corrections AUDIT_DIR/decisions.csv.",
    )
    p.add_argument("dir", type=Path, metavar="AUDIT_DIR", help="the --out folder of mieruka audit (with its report)")
    add_listen(p, 8010)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.serve.review import serve_review

    serve_review(args.dir, host=args.host, port=args.port)
