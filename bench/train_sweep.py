"""Train and test several training configurations × seeds, several runs at a time, and tabulate the results.

    python bench/train_sweep.py DATA --out runs/sweep --configs bench/sweeps/mt.json --seeds 0 1 [--parallel 4]

The configurations file maps a name to training options (``TrainConfig`` fields; ``{}`` is the defaults), plus one
experiment that is not an option yet: ``"_resize": "pad"`` keeps the aspect ratio (long side to the input size, the
rest padded by reflection) in training and evaluation alike, to see whether such a mode would pay. Each run
calls the library's ``train`` and then ``evaluate --split test``, exactly as the command line would. Results are
appended to ``OUT/results.jsonl`` as runs finish, so a sweep cut short keeps what it finished; ``--deadline S``
stops starting new runs after S seconds. The last line printed is one JSON object with every run's figures.

Choose between configurations on the validation figures (the mean over seeds); the test figures are reported, not
optimized. A GPU makes a sweep cheap; a configuration chosen there must still be timed on the target machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any


def _pad_resize(image: Any, size: int) -> Any:
    """(H, W, 3) uint8 → (3, size, size): long side to ``size``, aspect kept, the short side reflection-padded."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    top, left = (size - nh) // 2, (size - nw) // 2
    out = np.pad(small, ((top, size - nh - top), (left, size - nw - left), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _run_one(data: str, out: str, name: str, options: dict[str, Any], seed: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from mieruka.config import TrainConfig
    from mieruka.evaluate import evaluate
    from mieruka.train import train

    given, options = options, dict(options)
    if options.pop("_resize", "squash") == "pad":
        import mieruka.data.store as store

        store.resize_image = _pad_resize  # every ImageStore (training, validation, test) reads through it
    run = Path(out) / f"{name}-s{seed}"
    cfg = TrainConfig.from_dict({**options, "seed": seed})
    t0 = time.perf_counter()
    result = train(data, run / "run", cfg, progress=False)
    train_s = time.perf_counter() - t0
    ev = evaluate(result.model_path, data, run / "eval", split="test", progress=False)
    best = result.history[result.best_epoch - 1]
    m = ev.metrics
    return {
        "name": name,
        "seed": seed,
        "options": given,
        "train_seconds": round(train_s, 1),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_accuracy": round(best["val_accuracy"], 4),
        "val_balanced_accuracy": round(best["val_balanced_accuracy"], 4),
        "test_accuracy": round(m["accuracy"], 4),
        "test_balanced_accuracy": round(m["balanced_accuracy"], 4),
        "test_recall": {c: round(v["recall"], 3) for c, v in m["per_class"].items()},
        "escape_rate": round(m["escape_rate"], 4),
        "overkill_rate": round(m["overkill_rate"], 4),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    keys = ("val_balanced_accuracy", "val_accuracy", "test_balanced_accuracy", "test_accuracy", "train_seconds")
    lines = [
        "| config | seeds | val bal acc | val acc | test bal acc | test acc | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in by_name.items():
        cells = [f"{statistics.mean(r[k] for r in rs):.4f}" for k in keys[:4]]
        cells.append(f"{statistics.median(r['train_seconds'] for r in rs):.0f}")
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--configs", type=Path, required=True, help="JSON file: {name: {option: value}}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--deadline", type=float, default=0, help="start no run after this many seconds (0: none)")
    parser.add_argument("--results", type=Path, default=None, help="JSON-lines file (default OUT/results.jsonl)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these configuration names")
    args = parser.parse_args()

    configs: dict[str, dict[str, Any]] = json.loads(args.configs.read_text(encoding="utf-8"))
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only}
    # Seed-major order: every configuration gets its first seed before any gets a second.
    jobs = [(name, opts, seed) for seed in args.seeds for name, opts in configs.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    results_file = args.results or args.out / "results.jsonl"
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    # A fresh process per run: no state (an experiment's patch, CUDA context, thread settings) leaks between runs.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.parallel, mp_context=ctx, max_tasks_per_child=1) as pool:
        pending: dict[Any, tuple[str, int]] = {}
        while jobs or pending:
            while jobs and len(pending) < args.parallel:
                if args.deadline and time.perf_counter() - t0 > args.deadline:
                    print(f"deadline reached: {len(jobs)} run(s) not started", flush=True)
                    jobs = []
                    break
                name, opts, seed = jobs.pop(0)
                fut = pool.submit(_run_one, args.data, str(args.out), name, opts, seed, threads)
                pending[fut] = (name, seed)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                name, seed = pending.pop(fut)
                try:
                    row = fut.result()
                except Exception as exc:  # one failed configuration must not lose the others
                    print(f"{name} seed {seed}: failed: {exc}", file=sys.stderr, flush=True)
                    continue
                rows.append(row)
                with results_file.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(
                    f"{time.perf_counter() - t0:6.0f}s  {name:<16} seed {seed}  val {row['val_balanced_accuracy']:.4f}"
                    f"  test acc {row['test_accuracy']:.4f} bal {row['test_balanced_accuracy']:.4f}"
                    f"  ({row['train_seconds']:.0f}s, best epoch {row['best_epoch']})",
                    flush=True,
                )
    print(_table(rows))
    print(json.dumps({"runs": rows}))


if __name__ == "__main__":
    main()
