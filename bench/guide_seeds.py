"""Training with and without ``--guide masks`` over several seeds, judged on accuracy *and* explanations.

    python bench/guide_seeds.py ../shared/data/magnetic-tile/manifest.csv --out runs/guide --seeds 0 1 2 \
        [--guides none masks] [-- extra train options]

For every guide option and seed it runs the real command line, as a user would: ``mieruka train`` (its default
``--explain-method auto`` chooses the explanation on the validation regions and stores the table),
``mieruka evaluate --split test`` and ``mieruka audit --split test --method auto`` (the same choice, made again on
validation, audited on test beside Grad-CAM). Folders ``OUT/<guide>-s<seed>/{run,eval,audit}``; a step whose output
exists is not run again, so a sweep cut short resumes. Prints one row per run and the mean per option as Markdown,
and, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

VAL_KEYS = ("average_precision", "pointing_hit", "energy_inside")
TEST_KEYS = ("average_precision", "pointing_hit", "energy_inside", "relevance_rank", "iou_at_area")


def _run_one(data: str, out: Path, guide: str, seed: int, extra: list[str]) -> dict[str, Any]:
    cli = [sys.executable, "-m", "mieruka"]
    model = out / "run" / "model.safetensors"
    if not (out / "run" / "history.json").is_file() or not model.is_file():
        train = [*cli, "train", data, "--out", str(out / "run"), "--seed", str(seed), "--guide", guide, "--quiet"]
        subprocess.run([*train, "--overwrite", *extra], check=True)
    if not (out / "eval" / "metrics.json").is_file():
        subprocess.run([*cli, "evaluate", str(model), data, "--split", "test", "--out", str(out / "eval"), "--quiet"],
                       check=True)  # fmt: skip
    if not (out / "audit" / "summary.json").is_file():
        subprocess.run([*cli, "audit", str(model), data, "--split", "test", "--method", "auto", "--out",
                        str(out / "audit"), "--quiet"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return _figures(out, guide, seed)


def _figures(out: Path, guide: str, seed: int) -> dict[str, Any]:
    history = json.loads((out / "run" / "history.json").read_text(encoding="utf-8"))
    best = max(history, key=lambda h: (h["val_balanced_accuracy"], -h["val_loss"]))
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "audit" / "summary.json").read_text(encoding="utf-8"))
    selection = summary["method_selection"]
    chosen = summary["chosen_method"]
    val = next(c for c in selection["candidates"] if c["method"] == chosen)
    test = summary["methods"][chosen]["all"]
    gradcam = summary["methods"]["gradcam"]["all"]
    row: dict[str, Any] = {
        "guide": guide,
        "seed": seed,
        "chosen_method": chosen,
        "val_accuracy": best["val_accuracy"],
        "val_balanced_accuracy": best["val_balanced_accuracy"],
        "test_accuracy": metrics["accuracy"],
        "test_balanced_accuracy": metrics["balanced_accuracy"],
    }
    row.update({f"val_{k}": val[k] for k in VAL_KEYS})
    row.update({f"test_{k}": test[k] for k in TEST_KEYS})
    row["test_gradcam_average_precision"] = gradcam["average_precision"]
    row["test_defect_images"] = test["with_region"]
    return row


COLUMNS = (
    ("val_balanced_accuracy", "val bal acc"),
    ("test_accuracy", "test acc"),
    ("test_balanced_accuracy", "test bal acc"),
    ("val_average_precision", "val AP"),
    ("val_pointing_hit", "val pointing"),
    ("val_energy_inside", "val energy in"),
    ("test_average_precision", "test AP"),
    ("test_pointing_hit", "test pointing"),
    ("test_energy_inside", "test energy in"),
    ("test_iou_at_area", "test IoU@area"),
    ("test_gradcam_average_precision", "test AP (Grad-CAM)"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per run, then the mean of each guide option."""
    head = "| guide | seed | method (auto) | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k, _ in COLUMNS)
        lines.append(f"| {r['guide']} | {r['seed']} | {r['chosen_method']} | {cells} |")
    for guide in dict.fromkeys(r["guide"] for r in rows):
        rs = [r for r in rows if r["guide"] == guide]
        cells = " | ".join(f"**{statistics.mean(r[k] for r in rs):.3f}**" for k, _ in COLUMNS)
        lines.append(f"| {guide} | mean of {len(rs)} | | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--guides", nargs="+", default=["none", "masks"])
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = [
        _run_one(args.data, args.out / f"{guide}-s{seed}", guide, seed, extra)
        for seed in args.seeds
        for guide in args.guides
    ]
    print(table(rows))
    print(json.dumps({"runs": rows}))


if __name__ == "__main__":
    main()
