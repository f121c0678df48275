"""``mieruka flag``: what the line learnt of a decision later (an escape found downstream, an overkill)."""

from __future__ import annotations

import argparse
from typing import Any

from mieruka.cli._common import int_at_least

__all__ = ["register", "run_flag"]


def register(sub: Any) -> None:
    from mieruka.record import FLAG_KINDS

    p = sub.add_parser(
        "flag",
        help="flag a recorded decision as an escape or an overkill found later",
        description="Flag a decision of the line's record (serve --record): a part the service passed that failed "
        "downstream (escape) or one it rejected that was good (overkill). review --records then lists it first "
        "among the hard cases (its image must have been kept: serve --keep all keeps passed ones too). The same "
        "from another station: POST /v1/records/flags.",
    )
    p.add_argument("url", metavar="URL", help="the record: sqlite:///PATH or postgresql://…")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--part", metavar="ID", help="the part id (its newest decision)")
    which.add_argument("--id", type=int_at_least(1), metavar="N", help="the decision's id (the id of mieruka records)")
    p.add_argument("--kind", choices=FLAG_KINDS, default="escape", help="what was found (default escape)")
    p.add_argument("--note", help="what was found, in words (kept with the flag)")
    p.set_defaults(func=run_flag)


def run_flag(args: argparse.Namespace) -> None:
    from mieruka.record.flags import add_flag
    from mieruka.record.query import open_record

    engine = open_record(args.url)
    try:
        decision = add_flag(engine, kind=args.kind, decision=args.id, part=args.part, note=args.note)
    finally:
        engine.dispose()
    print(f"decision {decision} flagged: {args.kind}")
