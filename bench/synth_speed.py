"""Synthetic data generation speed on one core: ``python bench/synth_speed.py [--size 224] [--n 300]``.

Generates images of every class in memory (no disk writes) and prints, as its last line, one JSON object with the
images per second (median of 5 rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from mieruka.data.synth import CLASSES, make_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    rates = []
    for r in range(5):
        rng = np.random.default_rng(r)
        t = time.perf_counter()
        for i in range(args.n):
            make_image(CLASSES[i % len(CLASSES)], rng, args.size)
        rates.append(args.n / (time.perf_counter() - t))
    print(json.dumps({"images_per_second": round(statistics.median(rates), 1), "size": args.size}))


if __name__ == "__main__":
    main()
