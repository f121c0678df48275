"""Train and test several training configurations × seeds, several runs at a time, and tabulate the results.

    python bench/train_sweep.py DATA --out runs/sweep --configs bench/sweeps/mt.json --seeds 0 1 [--parallel 4]

The configurations file maps a name to training options (``TrainConfig`` fields; ``{}`` is the defaults), plus one
experiment that is not an option yet: ``"_resize": "pad"`` keeps the aspect ratio (long side to the input size, the
rest padded by reflection) in training and evaluation alike, to see whether such a mode would pay. Each run
calls the library's ``train`` and then ``evaluate --split test``, exactly as the command line would. Results are
appended to ``OUT/results.jsonl`` as runs finish, so a sweep cut short keeps what it finished; ``--deadline S``
stops starting new runs after S seconds. The last line printed is one JSON object with every run's figures.

With ``--per-epoch`` each run also records every epoch's validation and test logits (see ``_EpochRecorder``), so
``bench/epoch_rules.py`` can compare rules for choosing the saved epoch, and test-time views, without retraining.

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


class _EpochRecorder:
    """Keeps, for every epoch of one run, the validated (EMA) weights and the logits of the validation and test
    images, by wrapping the ``predict_logits`` that ``train`` calls once per epoch on the validation images.

    Early stopping does not change the weights before it stops, so a run with ``patience: 0`` recorded this way
    shows what every rule for choosing the epoch (and every test-time view) would have given.
    """

    def __init__(self, data: str, cfg: Any) -> None:
        import mieruka.train.loop as train_module
        from mieruka.data.dataset import load_dataset
        from mieruka.data.store import ImageStore

        dataset = load_dataset(data, ok_classes=cfg.ok_classes or None, split_seed=cfg.split_seed)
        self.classes = dataset.classes
        self.val = dataset.split("val")
        self.test = dataset.split("test")
        self.y_val = [dataset.label_index(s) for s in self.val]
        self.y_test = [dataset.label_index(s) for s in self.test]
        self.test_store = ImageStore([s.image for s in self.test], cfg.image_size, progress=False).require_readable()
        self.states: list[dict[str, Any]] = []
        self.val_logits: list[Any] = []
        self.test_logits: list[Any] = []
        self.model: Any = None
        self.store: Any = None
        self.val_idx: list[int] = []
        self.norm: dict[str, Any] = {}
        self._module = train_module
        self._original = train_module.predict_logits
        train_module.predict_logits = self._hook

    def close(self) -> None:
        """Put ``train``'s own ``predict_logits`` back."""
        self._module.predict_logits = self._original

    def _hook(self, model: Any, store: Any, indices: Any, **kw: Any) -> Any:
        logits = self._original(model, store, indices, **kw)
        self.model, self.store, self.val_idx = model, store, list(indices)
        self.norm = {"mean": kw["mean"], "std": kw["std"]}
        self.val_logits.append(logits)
        self.test_logits.append(self._original(model, self.test_store, range(len(self.test)), **kw))
        self.states.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        return logits

    def save(self, path: Path, d4_epochs: list[int]) -> None:
        """Write the per-epoch logits and, for ``d4_epochs`` (1-based), the 8-view probabilities, to ``path``."""
        import numpy as np

        from mieruka.inference import predict_probs

        arrays: dict[str, Any] = {
            "classes": np.array(self.classes),
            "val_images": np.array([str(s.image) for s in self.val]),
            "test_images": np.array([str(s.image) for s in self.test]),
            "y_val": np.array(self.y_val),
            "y_test": np.array(self.y_test),
            "val_logits": np.stack(self.val_logits),
            "test_logits": np.stack(self.test_logits),
            "d4_epochs": np.array(sorted(set(d4_epochs)), dtype=np.int64),
        }
        val_d4, test_d4 = [], []
        for epoch in arrays["d4_epochs"]:
            self.model.load_state_dict(self.states[epoch - 1])
            self.model.eval()
            val_d4.append(predict_probs(self.model, self.store, self.val_idx, tta="d4", **self.norm))
            test_d4.append(predict_probs(self.model, self.test_store, range(len(self.test)), tta="d4", **self.norm))
        arrays["val_d4"] = np.stack(val_d4)
        arrays["test_d4"] = np.stack(test_d4)
        np.savez_compressed(path, **arrays)


def _run_one(
    data: str, out: str, name: str, options: dict[str, Any], seed: int, threads: int, per_epoch: bool = False
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from _shared import explanation_figures  # bench/ is on the path of the sweep and of its workers

    from mieruka.config import TrainConfig
    from mieruka.evaluate import evaluate
    from mieruka.train import train

    given, options = options, dict(options)
    if options.pop("_resize", "squash") == "pad":
        import mieruka.data.store as store

        store.resize_image = _pad_resize  # every ImageStore (training, validation, test) reads through it
    run = Path(out) / f"{name}-s{seed}"
    cfg = TrainConfig.from_dict({**options, "seed": seed})
    recorder = _EpochRecorder(data, cfg) if per_epoch else None
    t0 = time.perf_counter()
    try:
        result = train(data, run / "run", cfg, progress=False)
    finally:
        if recorder is not None:
            recorder.close()
    train_s = time.perf_counter() - t0
    if recorder is not None:
        from epoch_rules import choose_epochs  # bench/ is on the path of the sweep and of its workers

        history = result.history
        picks = choose_epochs([h["val_balanced_accuracy"] for h in history], [h["val_loss"] for h in history])
        recorder.save(run / "epochs.npz", list(picks.values()))
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
        "test_accuracy": round(m.accuracy, 4),
        "test_balanced_accuracy": round(m.balanced_accuracy, 4),
        "test_recall": {c: round(v.recall, 3) for c, v in m.per_class.items()},
        "escape_rate": None if m.escape_rate is None else round(m.escape_rate, 4),
        "overkill_rate": None if m.overkill_rate is None else round(m.overkill_rate, 4),
        **explanation_figures(result.model_path, data),
    }


def _mean(values: list[Any]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.mean(known):.4f}" if known else "–"


def _table(rows: list[dict[str, Any]]) -> str:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    keys = ("val_balanced_accuracy", "val_accuracy", "test_balanced_accuracy", "test_accuracy", "val_ap",
            "val_pointing", "val_energy_inside")  # fmt: skip
    lines = [
        "| config | seeds | val bal acc | val acc | test bal acc | test acc | val AP | val pointing | val energy in "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in by_name.items():
        cells = [_mean([r.get(k) for r in rs]) for k in keys]
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
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: cores ÷ --parallel)")
    parser.add_argument("--deadline", type=float, default=0, help="start no run after this many seconds (0: none)")
    parser.add_argument("--results", type=Path, default=None, help="JSON-lines file (default OUT/results.jsonl)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these configuration names")
    parser.add_argument(
        "--per-epoch",
        action="store_true",
        help="also write RUN/epochs.npz: every epoch's validation and test logits, and 8-view (d4) probabilities "
        "for the epochs that some rule for choosing the epoch would pick (use with patience 0; bench/epoch_rules.py "
        "reads them)",
    )
    args = parser.parse_args()

    configs: dict[str, dict[str, Any]] = json.loads(args.configs.read_text(encoding="utf-8"))
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only}
    # Seed-major order: every configuration gets its first seed before any gets a second.
    jobs = [(name, opts, seed) for seed in args.seeds for name, opts in configs.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
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
                fut = pool.submit(_run_one, args.data, str(args.out), name, opts, seed, threads, args.per_epoch)
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
