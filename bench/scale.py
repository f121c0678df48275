"""Scale: flat memory of the batch commands, the Ray engine against the local one, and the training disk cache.

The model is the default architecture at the demo model's 224 px with its offline ImageNet backbone and a head for
the synthetic classes (speed and memory do not depend on training). Images: a pool of synthetic 224 px images with
masks (``mieruka synth``), hard-linked as many times as needed, so that every file is its own path.

* predict: peak RSS over ``--small`` and ``--large`` images (local engine); images/s of the local and the Ray engine
  on the large set, end to end (a process each, start-up included; Ray on a local instance of this machine's CPUs);
  ``ray_equal``: same classes, probabilities within 1e-5.
* audit (one method, gradcam, with its report): peak RSS over ``--audit-small`` and ``--audit-large`` images.
* ``--train N`` (off in ``--quick``): one epoch on N images with ``--cache ram`` and with ``--cache disk``; peak RSS
  of each and their epoch times.

    python bench/scale.py [--quick] [--work DIR] [--parts predict,audit] [--train 20000]

Prints, as its last line, one JSON object: rss_small_mb, rss_large_mb, rss_ratio (the larger of predict's and
audit's), predict / audit figures, local_ips, ray_ips, ray_ratio, ray_equal, and with --train the train_* figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 224
POOL = 60  # distinct synthetic images per class in the pool


def _peak(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``python -m mieruka ARGS`` in a fresh process."""
    code = (
        "import resource, sys\nfrom mieruka.cli import main\nrc = main(sys.argv[1:])\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)"
    )
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"mieruka {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    kb = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KB"))
    return kb / 1024, seconds


def _pool(work: Path) -> Path:
    from mieruka.data.synth import write_dataset

    pool = work / "pool"
    if not (pool / "manifest.csv").is_file():
        write_dataset(pool, per_class=POOL, seed=0, size=SIZE, progress=False)
    return pool


def _dataset(pool: Path, out: Path, n: int) -> Path:
    """A data set of ``n`` images (hard links to the pool's, every class alike) with masks, as a manifest."""
    if (out / "manifest.csv").is_file():
        return out / "manifest.csv"
    with open(pool / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        row = rows[i % len(rows)]
        image = out / "images" / f"{i:06d}.png"
        image.parent.mkdir(exist_ok=True)
        os.link(pool / row["image"], image)
        mask = ""
        if row.get("mask"):
            mask_path = out / "masks" / f"{i:06d}.png"
            mask_path.parent.mkdir(exist_ok=True)
            os.link(pool / row["mask"], mask_path)
            mask = str(mask_path)
        lines.append((str(image), row["label"], mask, ("train", "val", "test")[i % 3]))
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("image", "label", "mask", "split"))
        writer.writerows(lines)
    return out / "manifest.csv"


def _model(work: Path, pool: Path) -> Path:
    """The default architecture at 224 px with the ImageNet backbone and a head for the pool's classes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dataclasses import replace

    from _shared import default_model

    from mieruka.checkpoint import save_checkpoint
    from mieruka.data.dataset import load_dataset

    path = work / "model.safetensors"
    if not path.is_file():
        dataset = load_dataset(pool)
        model, info = default_model(SIZE)
        assert len(dataset.classes) == len(info.classes)
        save_checkpoint(path, model, replace(info, classes=tuple(dataset.classes), verdicts=dict(dataset.verdicts)))
    return path


def _images(manifest: Path) -> Path:
    return manifest.parent / "images"


def _predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _equal(a: list[dict[str, str]], b: list[dict[str, str]]) -> bool:
    if [r["image"] for r in a] != [r["image"] for r in b]:
        return False
    for x, y in zip(a, b, strict=True):
        if x["class"] != y["class"] or x["error"] != y["error"]:
            return False
        px = np.array([float(v) for k, v in x.items() if k.startswith("p[")])
        py = np.array([float(v) for k, v in y.items() if k.startswith("p[")])
        if np.abs(px - py).max() > 1e-5:
            return False
    return True


def _predict_figures(work: Path, model: Path, small: Path, large: Path, n_large: int) -> dict[str, Any]:
    options = ["--quiet", "--device", "cpu"]
    rss_small, _ = _peak(["predict", str(model), str(_images(small)), "--out", str(work / "p_small.csv"), *options])
    large_args = ["predict", str(model), str(_images(large)), *options]
    rss_large, local_s = _peak([*large_args, "--out", str(work / "p_local.csv")])
    _, ray_s = _peak([*large_args, "--out", str(work / "p_ray.csv"), "--engine", "ray"])
    same = _equal(_predictions(work / "p_local.csv"), _predictions(work / "p_ray.csv"))
    return {
        "rss_small_mb": round(rss_small, 1),
        "rss_large_mb": round(rss_large, 1),
        "rss_ratio": round(rss_large / rss_small, 3),
        "local_ips": round(n_large / local_s, 2),
        "ray_ips": round(n_large / ray_s, 2),
        "ray_ratio": round(local_s / ray_s, 3),
        "ray_equal": same,
    }


def _audit_figures(work: Path, model: Path, small: Path, large: Path) -> dict[str, Any]:
    base = ["audit", str(model), "--method", "gradcam", "--split", "test", "--quiet", "--device", "cpu"]
    rss_small, _ = _peak([*base, str(small), "--out", str(work / "a_small")])
    rss_large, seconds = _peak([*base, str(large), "--out", str(work / "a_large")])
    return {
        "rss_small_mb": round(rss_small, 1),
        "rss_large_mb": round(rss_large, 1),
        "rss_ratio": round(rss_large / rss_small, 3),
        "large_seconds": round(seconds, 1),
    }


def _train_figures(work: Path, pool: Path, n: int) -> dict[str, Any]:
    data = _dataset(pool, work / f"train_{n}", n)
    out: dict[str, Any] = {"train_images": n}
    cache = work / "image-cache"
    shutil.rmtree(cache, ignore_errors=True)
    for mode in ("ram", "disk"):
        run = work / f"train_run_{mode}"
        args = ["train", str(data), "--out", str(run), "--overwrite", "--epochs", "1", "--image-size", str(SIZE)]
        args += ["--cache", mode, "--cache-gb", "64", "--quiet", "--device", "cpu"]
        rss, seconds = _peak(args, env={"MIERUKA_CACHE_DIR": str(cache)})
        history = json.loads((run / "history.json").read_text(encoding="utf-8"))
        out[f"train_rss_{mode}_mb"] = round(rss, 1)
        out[f"train_epoch_{mode}_s"] = round(float(history[0]["seconds"]), 1)
        out[f"train_total_{mode}_s"] = round(seconds, 1)
    out["train_epoch_ratio"] = round(out["train_epoch_disk_s"] / out["train_epoch_ram_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets: under 5 minutes on 2 cores")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mieruka-scale"), help="scratch folder")
    parser.add_argument("--small", type=int, help="predict: small set (default 300; quick 200)")
    parser.add_argument("--large", type=int, help="predict: large set (default 20000; quick 2000)")
    parser.add_argument("--audit-small", type=int, help="audit: small split (default 300; quick 120)")
    parser.add_argument("--audit-large", type=int, help="audit: large split (default 3000; quick 600)")
    parser.add_argument("--train", type=int, default=0, help="also the training cache on this many images (0: off)")
    parser.add_argument("--parts", default="predict,audit", help="comma-separated: predict, audit (default both)")
    args = parser.parse_args()
    n_small = args.small or (200 if args.quick else 300)
    n_large = args.large or (2000 if args.quick else 20000)
    a_small = args.audit_small or (120 if args.quick else 300)
    a_large = args.audit_large or (600 if args.quick else 3000)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = _pool(work)
    model = _model(work, pool)
    parts = set(args.parts.split(",")) - {""}
    result: dict[str, Any] = {"size": SIZE, "predict_images": [n_small, n_large], "audit_images": [a_small, a_large]}
    ratios = []
    if "predict" in parts:
        sets = {n: _dataset(pool, work / f"set_{n}", n) for n in {n_small, n_large}}
        predict = _predict_figures(work, model, sets[n_small], sets[n_large], n_large)
        result.update({k: predict[k] for k in ("rss_small_mb", "rss_large_mb")}, predict=predict)
        result.update({k: predict[k] for k in ("local_ips", "ray_ips", "ray_ratio", "ray_equal")})
        ratios.append(predict["rss_ratio"])
    if "audit" in parts:  # the audited split is a third of the set (split column: train, val, test in turn)
        audit_sets = {n: _dataset(pool, work / f"set_{3 * n}", 3 * n) for n in {a_small, a_large}}
        audit = _audit_figures(work, model, audit_sets[a_small], audit_sets[a_large])
        result["audit"] = audit
        ratios.append(audit["rss_ratio"])
    if ratios:
        result["rss_ratio"] = max(ratios)
    if args.train:
        result.update(_train_figures(work, pool, args.train))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
