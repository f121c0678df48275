"""``mieruka review``: an audit's report served with a decision per review item."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_listen, int_at_least, number_in

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
    p.add_argument(
        "dir",
        type=Path,
        nargs="?",
        metavar="AUDIT_DIR",
        help="the --out folder of mieruka audit (with its report); with --records: where decisions.csv goes",
    )
    p.add_argument(
        "--records",
        metavar="URL",
        help="review the line's hard cases instead: the recorded decisions judged NG, below --below, or with a "
        "heatmap far from the model's reference (--far), whose image the service kept (serve --record URL --keep …); "
        "decisions name them record:ID",
    )
    p.add_argument(
        "--below", type=number_in(0, 1), default=0.6, help="with --records: also list answers below this probability"
    )
    p.add_argument(
        "--far",
        type=number_in(0, 1),
        default=0.01,
        help="with --records: also list answers whose heatmap peak position or spread has a two-sided tail "
        "probability below this in the model's reference (beyond its range: 2/(n+1)); 0 = off (default 0.01)",
    )
    p.add_argument(
        "--record-files",
        metavar="DIR",
        help="with --records postgresql://…: the folder of the record's kept images (serve --record-files DIR)",
    )
    p.add_argument("--limit", type=int_at_least(1), default=200, help="with --records: at most this many (newest)")
    add_listen(p, 8010)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if args.records is None:
        if args.dir is None:
            raise ValueError("give the AUDIT_DIR to review, or --records URL for the line's hard cases")
        from mieruka.serve.review import serve_review

        serve_review(args.dir, host=args.host, port=args.port)
        return
    import uvicorn

    from mieruka.serve.review_records import create_records_review_app

    decisions = (args.dir or Path(".")) / "decisions.csv"
    app = create_records_review_app(
        args.records, decisions, below=args.below, far=args.far, limit=args.limit, files=args.record_files
    )
    print(f"mieruka review: http://{args.host}:{args.port}/ ; decisions go to {decisions}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
