"""Grad-CAM speed: mieruka's explain path against plain inference and pytorch-grad-cam 1.5.7, in one run.

Same model, inputs and layer for all: tf_efficientnet_lite0 with 6 classes and random weights, 224 × 224 inputs,
batch 16 on a CPU (64 on a GPU), the last convolutional block. Each figure is the median of several timed
repetitions after a warm-up.

    python bench/cam_speed.py [--batch 16] [--repeats 7] [--device auto] [--output-stride 16]

Prints, as its last line, one JSON object: plain_ips, explain_one_target_ips, explain_all_classes_ips,
explain_recheck_ips (the closed form checked on every batch, as before it was remembered per shape),
reference_one_target_ips, reference_all_classes_ips, speedup_one_target, speedup_all_classes, cost_vs_plain, device,
output_stride.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mieruka.explain import engine
from mieruka.explain.engine import explain
from mieruka.explain.targets import PredictedClass
from mieruka.inference import select_device
from mieruka.models import build_model


def _ips(fn: Callable[[], object], n_images: int, repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return n_images / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="default 16 on CPU, 64 on GPU")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-reference", action="store_true", help="skip pytorch-grad-cam")
    parser.add_argument(
        "--output-stride",
        type=int,
        default=32,
        choices=(32, 16, 8),
        help="the dilated backbone of train --output-stride",
    )
    args = parser.parse_args()
    device = select_device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 16)
    torch.manual_seed(0)
    model = build_model("tf_efficientnet_lite0", 6, output_stride=args.output_stride).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def plain() -> None:
        with torch.inference_mode():
            model(x)

    result: dict[str, object] = {}
    result["plain_ips"] = _ips(plain, batch, args.repeats, sync)
    result["explain_one_target_ips"] = _ips(
        lambda: explain(model, x, method="gradcam", targets=[PredictedClass()]), batch, args.repeats, sync
    )

    def recheck() -> None:
        engine._CHECKED.clear()  # the check's read-back on every batch, as before it was remembered
        explain(model, x, method="gradcam", targets=[PredictedClass()])

    result["explain_recheck_ips"] = _ips(recheck, batch, args.repeats, sync)
    result["explain_all_classes_ips"] = _ips(
        lambda: explain(model, x, method="gradcam", targets="all"), batch, args.repeats, sync
    )
    if not args.no_reference:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        reference = GradCAM(model=model, target_layers=[model.bn2])

        def ref_one() -> None:
            reference(input_tensor=x, targets=None)  # the predicted class of each image

        def ref_all() -> None:
            for c in range(6):
                reference(input_tensor=x, targets=[ClassifierOutputTarget(c)] * batch)

        result["reference_one_target_ips"] = _ips(ref_one, batch, args.repeats, sync)
        result["reference_all_classes_ips"] = _ips(ref_all, batch, max(3, args.repeats // 2), sync)
        result["speedup_one_target"] = result["explain_one_target_ips"] / result["reference_one_target_ips"]  # type: ignore[operator]
        result["speedup_all_classes"] = result["explain_all_classes_ips"] / result["reference_all_classes_ips"]  # type: ignore[operator]
    result["cost_vs_plain"] = result["plain_ips"] / result["explain_one_target_ips"]  # type: ignore[operator]
    result["cost_vs_plain_recheck"] = result["plain_ips"] / result["explain_recheck_ips"]  # type: ignore[operator]
    result["batch"] = batch
    result["output_stride"] = args.output_stride
    result["torch"] = torch.__version__
    result["device"] = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)")
    )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
