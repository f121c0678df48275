"""Which epoch to keep, and which test-time views to use, judged over many runs without retraining.

    python bench/train_sweep.py DATA --out runs/sweep --configs bench/sweeps/mt-epochs.json --seeds 0 1 2 --per-epoch
    python bench/epoch_rules.py runs/sweep [--floors 0.97 0.95]

Reads every ``RUN/epochs.npz`` that ``train_sweep.py --per-epoch`` wrote (each epoch's validation and test logits,
and 8-view probabilities for the epochs some rule picks) and, for each configuration, rule and view, tabulates the
mean over seeds of the validation figures (what a choice may be made on) beside the test figures (reported only):

* ``library``: the best validation balanced accuracy, ties to the lower validation loss, stopping after 8 epochs
  without a better one — what ``mieruka train`` does with its defaults;
* ``library, no early stop``: the same rule over every epoch;
* ``ties to later``: the best validation balanced accuracy, ties to the later epoch;
* ``lowest val loss``; ``last epoch``.

Views: ``none`` (one view, the softmax of the logits) and ``d4`` (the softmax averaged over the 8 flips and 90° turns).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from mieruka.metrics import classification_metrics

RULES = ("library", "library, no early stop", "ties to later", "lowest val loss", "last epoch")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def choose_epochs(val_bal: list[float], val_loss: list[float]) -> dict[str, int]:
    """1-based epoch each rule keeps, from the per-epoch validation balanced accuracy and loss (as ``train`` does)."""
    picks: dict[str, int] = {}
    for rule, patience in (("library", 8), ("library, no early stop", 0)):
        best = 0
        for i in range(len(val_bal)):
            if best and patience and i + 1 - best > patience:
                break
            if (
                not best
                or val_bal[i] > val_bal[best - 1]
                or (val_bal[i] == val_bal[best - 1] and val_loss[i] < val_loss[best - 1])
            ):
                best = i + 1
        picks[rule] = best
    top = max(val_bal)
    picks["ties to later"] = max(i + 1 for i, b in enumerate(val_bal) if b == top)
    picks["lowest val loss"] = int(np.argmin(val_loss)) + 1
    picks["last epoch"] = len(val_bal)
    return picks


def run_figures(z: Any, floors: tuple[float, float]) -> dict[str, dict[str, dict[str, float]]]:
    """{rule: {view: figures}} for one run's ``epochs.npz``."""
    classes = [str(c) for c in z["classes"]]
    y_val, y_test = z["y_val"], z["y_test"]
    val_probs = _softmax(z["val_logits"])
    test_probs = _softmax(z["test_logits"])
    val_bal = [classification_metrics(y_val, p.argmax(1), classes)["balanced_accuracy"] for p in val_probs]
    # The loss train() logs: cross-entropy of the logits, no label smoothing.
    val_loss = [_cross_entropy(p, y_val) for p in val_probs]
    d4_at = {int(e): i for i, e in enumerate(z["d4_epochs"])}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rule, epoch in choose_epochs(val_bal, val_loss).items():
        views = {"none": (val_probs[epoch - 1], test_probs[epoch - 1])}
        if epoch in d4_at:
            views["d4"] = (z["val_d4"][d4_at[epoch]], z["test_d4"][d4_at[epoch]])
        out[rule] = {}
        for view, (pv, pt) in views.items():
            mv = classification_metrics(y_val, pv.argmax(1), classes)
            mt = classification_metrics(y_test, pt.argmax(1), classes)
            out[rule][view] = {
                "epoch": epoch,
                "val_accuracy": mv["accuracy"],
                "val_balanced_accuracy": mv["balanced_accuracy"],
                "val_loss": _cross_entropy(pv, y_val),
                "test_accuracy": mt["accuracy"],
                "test_balanced_accuracy": mt["balanced_accuracy"],
                "test_errors": int((pt.argmax(1) != y_test).sum()),
                "test_wrong": [
                    f"{Path(str(z['test_images'][i])).parts[-3]}/{Path(str(z['test_images'][i])).name} as "
                    f"{classes[int(pt[i].argmax())]}"
                    for i in np.flatnonzero(pt.argmax(1) != y_test)
                ],
                "meets_floors": float(mt["accuracy"] >= floors[0] and mt["balanced_accuracy"] >= floors[1]),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the --out folder of train_sweep.py --per-epoch")
    parser.add_argument("--floors", type=float, nargs=2, default=(0.97, 0.95), metavar=("ACC", "BAL_ACC"))
    args = parser.parse_args()

    files = sorted(args.sweep.glob("*/epochs.npz"))
    if not files:
        raise SystemExit(f"{args.sweep}: no */epochs.npz (run bench/train_sweep.py with --per-epoch)")
    runs: dict[str, dict[str, Any]] = {}
    for f in files:
        name, _, seed = f.parent.name.rpartition("-s")
        with np.load(f) as z:
            runs.setdefault(name, {})[seed] = run_figures(z, tuple(args.floors))

    keys = ("val_balanced_accuracy", "val_accuracy", "val_loss", "test_balanced_accuracy", "test_accuracy")
    print("| config | rule | view | runs | val bal acc | val acc | val loss | test bal acc | test acc | ≥ floors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table = []
    for name, seeds in runs.items():
        for rule in RULES:
            for view in ("none", "d4"):
                rows = [s[rule][view] for s in seeds.values() if view in s[rule]]
                if not rows:
                    continue
                mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
                met = int(sum(r["meets_floors"] for r in rows))
                missing = len(seeds) - len(rows)
                note = f" ({missing} without d4)" if missing else ""
                table.append({"config": name, "rule": rule, "view": view, "runs": len(rows), "met": met, **mean})
                cells = " | ".join(f"{mean[k]:.4f}" for k in keys)
                print(f"| {name} | {rule} | {view} | {len(rows)}{note} | {cells} | {met} |")
    print(json.dumps({"table": table, "runs": runs}))


if __name__ == "__main__":
    main()
