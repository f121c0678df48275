"""Where do the heatmaps point? ``mieruka audit`` on a data set's test split for several methods, timed.

    python bench/audit_localization.py MODEL DATA --out DIR [--methods gradcam,layercam:blocks.4+blocks.5+bn2]

Prints one line per method (energy inside the defect, its lift over a uniform map, pointing game, relevance rank
accuracy on the defect images) and, as its last line, one JSON object with those figures and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mieruka.audit.run import run_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="gradcam,layercam:blocks.4+blocks.5+bn2")
    parser.add_argument("--split", default="test")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    t = time.perf_counter()
    run = run_audit(
        args.model,
        args.data,
        args.out,
        split=args.split,
        methods=args.methods.split(","),
        report=not args.no_report,
        progress=False,
    )
    seconds = time.perf_counter() - t
    figures = {}
    summary = run.summary.to_json()  # the figures by their summary.json keys
    for method, groups in summary["methods"].items():
        a = groups["all"]
        figures[method] = {
            k: round(a[k], 4) for k in ("energy_inside", "lift", "pointing_hit", "relevance_rank", "average_precision")
        }
        figures[method]["by_class"] = {
            c: {k: round(g[k], 4) for k in ("energy_inside", "lift", "pointing_hit", "relevance_rank")}
            for c, g in groups.items()
            if c != "all" and g["with_region"]
        }
        print(method, figures[method])
    base = summary["methods"][next(iter(summary["methods"]))]["all"]["baselines"]
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "methods": figures,
                "uniform": {k: round(v, 4) for k, v in base["uniform"].items()},
                "center": {k: round(v, 4) for k, v in base["center"].items()},
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
