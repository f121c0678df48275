"""Do two versions of mieruka give the same figures? Runs the real commands on one model and data set and keeps
their outputs, normalized, with their SHA-256; ``--against`` compares with an earlier run to the last digit.

What it runs (every figure a refactoring must not move):

* ``mieruka predict`` on the split's images → ``predictions.csv``;
* ``mieruka evaluate --split SPLIT`` → ``metrics.json`` and ``predictions.csv``;
* ``mieruka audit --split SPLIT --method gradcam,layercam`` (the default methods of the model beside them) →
  ``audit.csv``, ``summary.json`` and ``review.csv``;
* ``mieruka explain --split SPLIT`` → ``maps.npz`` (every map's bytes) and ``manifest.json``.

Paths, versions and timings are taken out before hashing (they differ between checkouts, not between figures).

    python bench/same_figures.py MODEL DATA --out runs/figures-before
    python bench/same_figures.py MODEL DATA --out runs/figures-after --against runs/figures-before

Prints one JSON line: the SHA-256 per file and, with ``--against``, ``same`` (true when every file matches) and the
files that differ.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

VOLATILE = {"mieruka_version", "model", "data", "seconds", "created", "out", "elapsed_s"}
"""Keys whose values name the checkout, a path or a time, not a figure."""


def _mieruka(*args: str) -> None:
    cmd = [sys.executable, "-m", "mieruka", *args, "--quiet"]
    shown = [a if len(a) < 200 else a[:40] + "…" for a in args[:6]]
    print("$ mieruka " + " ".join(shown) + (" …" if len(args) > 6 else ""), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def _drop_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def _json_text(path: Path) -> str:
    return json.dumps(_drop_volatile(json.loads(path.read_text(encoding="utf-8"))), sort_keys=True, indent=1)


def _csv_text(path: Path, root: Path) -> str:
    """The CSV with paths made relative to ``root`` (the data set), so two checkouts compare."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    prefix = str(root) + "/"

    def cell(c: str) -> str:  # an absolute path, however spelt (a/../b), made relative to the data set
        return os.path.normpath(c).removeprefix(prefix) if c.startswith("/") else c

    return "\n".join(",".join(cell(c) for c in row) for row in rows) + "\n"


def _npz_digest(path: Path) -> str:
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode())
            h.update(z.read(name))
    return h.hexdigest()


def _split_images(data: Path, split: str) -> list[str]:
    """The images of one split of a manifest CSV, as the commands read them."""
    with open(data, newline="", encoding="utf-8") as fh:
        return [str(data.parent / r["image"]) for r in csv.DictReader(fh) if r["split"] == split]


def run(model: Path, data: Path, out: Path, split: str) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw"  # a step whose last file is there already is not run again (a cut run goes on)
    if not (raw / "predict.csv").is_file():
        _mieruka("predict", str(model), *_split_images(data, split), "--out", str(raw / "predict.csv"))
    if not (raw / "evaluate" / "confusion_matrix.png").is_file():
        _mieruka("evaluate", str(model), str(data), "--split", split, "--out", str(raw / "evaluate"))
    if not (raw / "audit" / "report" / "index.html").is_file():
        _mieruka("audit", str(model), str(data), "--split", split, "--method", "gradcam,layercam", "--out",
                 str(raw / "audit"))  # fmt: skip
    if not (raw / "explain" / "manifest.json").is_file():
        _mieruka("explain", str(model), str(data), "--split", split, "--out", str(raw / "explain"))
    root = data.parent.resolve()
    texts = {
        "predict.csv": _csv_text(raw / "predict.csv", root),
        "evaluate/metrics.json": _json_text(raw / "evaluate" / "metrics.json"),
        "evaluate/predictions.csv": _csv_text(raw / "evaluate" / "predictions.csv", root),
        "audit/audit.csv": _csv_text(raw / "audit" / "audit.csv", root),
        "audit/summary.json": _json_text(raw / "audit" / "summary.json"),
        "audit/review.csv": _csv_text(raw / "audit" / "review.csv", root),
        "explain/manifest.json": _json_text(raw / "explain" / "manifest.json"),
    }
    digests = {}
    for name, text in texts.items():
        text = text.replace(str(root) + "/", "")
        kept = out / "normalized" / name
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text, encoding="utf-8")
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
    digests["explain/maps.npz"] = _npz_digest(raw / "explain" / "maps.npz")
    (out / "digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True), encoding="utf-8")
    return digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path, help="a manifest CSV")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--against", type=Path, help="an earlier --out to compare with")
    a = ap.parse_args()
    digests = run(a.model.resolve(), a.data.resolve(), a.out, a.split)
    result: dict[str, Any] = {"model": str(a.model), "split": a.split, "digests": digests}
    if a.against is not None:
        before = json.loads((a.against / "digests.json").read_text(encoding="utf-8"))
        differ = sorted(k for k in set(before) | set(digests) if before.get(k) != digests.get(k))
        result.update(same=not differ, differ=differ, against=str(a.against))
    print(json.dumps(result))
    if a.against is not None and not result["same"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
