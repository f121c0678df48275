"""Default ``mieruka train`` then ``mieruka evaluate --split test`` on a data set, timed.

    python bench/train_eval.py ../shared/data/magnetic-tile/manifest.csv --out runs/bench-mt [-- extra train options]

Runs the real command line (so the figure is what a user gets), and prints, as its last line, one JSON object with
the training wall time, the best epoch, the test metrics and, beside them, the validation explanation figures of the
model's stored method (AP, pointing game, energy inside on the validation defect regions): a change of default is
judged on both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _shared import explanation_figures  # bench/ is on the path of a script run from it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args, train_args = parser.parse_known_args()  # everything else goes to mieruka train
    train_args = [a for a in train_args if a != "--"]
    cli = [sys.executable, "-m", "mieruka"]
    t0 = time.perf_counter()
    subprocess.run([*cli, "train", str(args.data), "--out", str(args.out / "run"), *train_args], check=True)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run(
        [
            *cli,
            "evaluate",
            str(args.out / "run" / "model.safetensors"),
            str(args.data),
            "--split",
            "test",
            "--out",
            str(args.out / "eval"),
            "--quiet",
        ],
        check=True,
    )
    eval_s = time.perf_counter() - t1
    m = json.loads((args.out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    info = json.loads(
        subprocess.run(
            [*cli, "info", str(args.out / "run" / "model.safetensors")], check=True, capture_output=True, text=True
        ).stdout
    )
    print(
        json.dumps(
            {
                "train_seconds": round(train_s, 1),
                "evaluate_seconds": round(eval_s, 1),
                "best_epoch": info["summary"].get("best_epoch"),
                "epochs_run": len(json.loads((args.out / "run" / "history.json").read_text())),
                "test_accuracy": round(m["accuracy"], 4),
                "test_balanced_accuracy": round(m["balanced_accuracy"], 4),
                "escape_rate": m["escape_rate"],
                "overkill_rate": m["overkill_rate"],
                "threshold": round(m["threshold"], 4),
                "escape_at_threshold": m["gate_at_threshold"]["escape_rate"],
                "overkill_at_threshold": m["gate_at_threshold"]["overkill_rate"],
                **explanation_figures(args.out / "run" / "model.safetensors", str(args.data)),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            }
        )
    )


if __name__ == "__main__":
    main()
