"""What the drift reference adds to training: :func:`mieruka.record.reference.drift_reference` of a trained model on
its data's validation split (the images read, run as the service runs them, summarized), timed.

    python bench/reference_cost.py MODEL.safetensors DATA [--repeats 3]

Prints, as its last line, one JSON object: ``images``, ``seconds`` (each run), ``median_s``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _shared import cpu_description

from mieruka.checkpoint import load_checkpoint
from mieruka.record.reference import drift_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, info, _ = load_checkpoint(args.model)
    times, n = [], 0
    for _ in range(args.repeats):
        t = time.perf_counter()
        reference = drift_reference(model, info, args.data)
        times.append(time.perf_counter() - t)
        n = reference["n"] if reference else 0
    print(json.dumps({"images": n, "seconds": [round(x, 2) for x in times],
                      "median_s": round(statistics.median(times), 2), "device": cpu_description()}))  # fmt: skip


if __name__ == "__main__":
    main()
