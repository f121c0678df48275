"""CPU inference speed by forward-pass size: why mieruka slices CPU batches to ``CPU_PIXELS_PER_PASS`` pixels.

tf_efficientnet_lite0 (6 classes, random weights, eval mode, channels-last, inference mode) on random inputs; for
each image size, every pass size is timed in turn within each repetition (so drifts of a shared machine hit all
alike), one warm-up pass each, and the median images/s is reported.

    python bench/cpu_batch.py [--sizes 128 224 256 384] [--batches 1 2 4 8 16 32 64] [--repeats 5]

Prints one line per image size, then one JSON object: {size: {pass size: images/s}}, the pass size
``mieruka.inference`` uses at that image size, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from mieruka.inference import CPU_PIXELS_PER_PASS
from mieruka.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224, 256, 384])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("tf_efficientnet_lite0", 6).eval().to(memory_format=torch.channels_last)
    results: dict[int, dict[int, float]] = {}
    with torch.inference_mode():
        for size in args.sizes:
            inputs = {
                b: torch.randn(b, 3, size, size).contiguous(memory_format=torch.channels_last) for b in args.batches
            }
            for x in inputs.values():
                model(x)
            rates: dict[int, list[float]] = {b: [] for b in args.batches}
            for _ in range(args.repeats):
                for b, x in inputs.items():
                    t0 = time.perf_counter()
                    model(x)
                    rates[b].append(b / (time.perf_counter() - t0))
            results[size] = {b: round(statistics.median(r), 1) for b, r in rates.items()}
            print(size, "px:", "  ".join(f"{b}: {ips}" for b, ips in results[size].items()), "images/s", flush=True)
    print(
        json.dumps(
            {
                "images_per_second": results,
                "mieruka_pass_size": {s: max(1, CPU_PIXELS_PER_PASS // (s * s)) for s in args.sizes},
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads",
            }
        )
    )


if __name__ == "__main__":
    main()
