"""``mieruka records``: the line's record (``serve --record``) exported to CSV or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_selection", "register", "run_records"]


def add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "url", metavar="URL", help="the record: sqlite:///PATH or postgresql://… (as given to serve --record)"
    )
    p.add_argument("--since", help="from this ISO date or time on (UTC unless it says its zone)")
    p.add_argument("--until", help="before this ISO date or time")
    p.add_argument("--model", metavar="ID", help="only this model (its id, or the start of it: GET /v1/model says it)")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "records",
        help="export the line's record (serve --record) to CSV or Parquet",
        description="Write the decisions the service recorded (time, part id, model id and version, class, "
        "probabilities, verdict, NG threshold, TTA, image and heatmap summary, kept files) to CSV or Parquet.",
    )
    add_selection(p)
    p.add_argument("--verdict", choices=("OK", "NG"), help="only this verdict")
    p.add_argument("--class", dest="cls", metavar="CLASS", help="only this predicted class")
    p.add_argument("--part", metavar="ID", help="only this part id")
    p.add_argument("--out", type=Path, required=True, help="output file: .csv or .parquet")
    p.set_defaults(func=run_records)


def run_records(args: argparse.Namespace) -> None:
    from mieruka.record.query import Selection, export, parse_time

    selection = Selection(
        since=parse_time(args.since, "--since"),
        until=parse_time(args.until, "--until"),
        verdict=args.verdict,
        cls=args.cls,
        model=args.model,
        part=args.part,
    )
    n = export(args.url, selection, args.out)
    print(f"{n} decision(s) written to {args.out}")
