"""``mieruka report``: write an audit's HTML report again (e.g. in Japanese)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write an audit's HTML report again (e.g. in Japanese)",
        description="Rebuild DIR/report/index.html from the files mieruka audit wrote in DIR (audit.csv, "
        "summary.json, review.csv, report/panels.json), reusing its panels; --lang ja for Japanese.",
    )
    p.add_argument("dir", type=Path, help="the audit's --out folder")
    p.add_argument("--lang", choices=("en", "ja"), default="en", help="language of the report (default en)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.audit.report import rebuild_report

    print(f"report: {rebuild_report(args.dir, lang=args.lang)}")
