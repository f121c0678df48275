"""``mieruka monitor``: the line's record (``serve --record``) watched for drift."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mieruka.cli._common import int_at_least
from mieruka.cli.records import add_selection
from mieruka.errors import MierukaError

__all__ = ["ALERT_EXIT", "register", "run_monitor"]

ALERT_EXIT = 3
"""``monitor``'s exit status when it raises an alert."""


def register(sub: Any) -> None:
    m = sub.add_parser(
        "monitor",
        help="watch the line's record for drift (confidence, class mix, image, heatmap, NG rate)",
        description="Compare the newest decisions of a model with its reference (stored at training, else its first "
        "decisions in the record): population stability index and a two-sample test per feature, the class mix, "
        f"the NG rate on a p-chart. Exit status {ALERT_EXIT} when it raises an alert.",
    )
    add_selection(m)
    m.add_argument("--window", type=int_at_least(2), default=500, help="the newest N decisions (default 500)")
    m.add_argument(
        "--reference",
        type=int_at_least(2),
        default=500,
        help="decisions that make the reference when the model stored none (default 500)",
    )
    m.add_argument("--json", action="store_true", help="print the report as one JSON object")
    m.add_argument("--webhook", metavar="URL", help="POST the report's JSON here when there is an alert")
    m.add_argument(
        "--plot",
        metavar="FILE.png",
        type=Path,
        help="also draw the report: each feature's distribution against its reference, the class mix, the p-chart",
    )
    m.set_defaults(func=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
    from mieruka.record.monitor import monitor, send_webhook
    from mieruka.record.query import open_record, parse_time

    engine = open_record(args.url)
    try:
        report = monitor(
            engine,
            model=args.model,
            window=args.window,
            since=parse_time(args.since, "--since"),
            until=parse_time(args.until, "--until"),
            reference=args.reference,
        )
    finally:
        engine.dispose()
    if args.plot is not None:
        from mieruka.record.plots import plot_report

        try:
            plot_report(report, args.plot)
        except OSError as exc:
            raise MierukaError(f"--plot {args.plot}: cannot write it ({exc.strerror or exc})") from None
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        _print(report)
    if report.alerts and args.webhook:
        try:
            send_webhook(args.webhook, report)
        except OSError as exc:
            print(f"warning: --webhook {args.webhook}: {exc}", file=sys.stderr)
    return ALERT_EXIT if report.alerts else 0


def _print(report: Any) -> None:
    print(f"model {report.model_id[:12]}: {report.window['n']} decisions against {report.reference['source']} "
          f"(n = {report.reference['n']})")  # fmt: skip
    for name, value in report.psi.items():
        p = report.p_values.get(name)
        shown = "–" if value is None else f"{value:.3f}"
        print(f"  {name:<12} PSI {shown:>7}   p {'–' if p is None else f'{p:.2g}'}")
    r = report.ng_rate
    print(f"  NG rate {r['window']:.3f} (reference {r['reference']:.3f}, limits {r['lower']:.3f}–{r['upper']:.3f})")
    for alert in report.alerts:
        print(f"ALERT: {alert['message']}")
    if not report.alerts:
        print("no alert")
