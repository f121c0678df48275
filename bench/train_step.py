"""CPU training step time by frozen stages, with the frozen first modules run whole or in slices.

    python bench/train_step.py [--size 256] [--batch 32] [--repeats 5] [--fine] [--strides 32,16,8]

One training step (forward, backward, AdamW) of EfficientNet-Lite0 on a random batch, in training mode with the
frozen BatchNorm layers in eval mode, as ``mieruka train`` runs it: the whole model on the batch, or (what ``train``
does on a CPU) the frozen first modules without autograd in slices of ``CPU_PIXELS_PER_PASS`` pixels and the rest on
the whole batch. With ``--fine``, two more variants: the step of ``--guide-fine`` (3 frozen stages, the whole model,
the cross-entropy plus the fine guide's second-order loss on a third of the batch, marked with random regions), with
PyTorch's double backward of the depthwise convolutions and with :class:`GroupedConvDoubleBackward`, as ``train``
runs it. With ``--strides``, the sliced step of 3 frozen stages at each other ``--output-stride`` too (the dilated
backbone ``train --output-stride`` builds). Every variant is timed in turn within each repetition; medians in seconds
per step. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F
from _shared import cpu_description

from mieruka.models import build_model
from mieruka.train.frozen import FrozenPrefix, freeze_stages, frozen_batchnorms
from mieruka.train.grouped_conv import GroupedConvDoubleBackward
from mieruka.train.guide import FineGuide
from mieruka.train.state import param_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fine",
        action="store_true",
        help="also time the step of --guide-fine, with and without the grouped convolutions' double backward",
    )
    parser.add_argument(
        "--strides",
        default="32",
        help="comma-separated output strides: 16 and 8 add the sliced step of the dilated backbone (default 32)",
    )
    args = parser.parse_args()

    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (args.batch,))
    steps = {}
    variants = [(stages, 32) for stages in (2, 3)] + [(3, int(v)) for v in args.strides.split(",") if int(v) != 32]
    for stages, stride in variants:
        model, optimizer = _training_model(stages, stride)
        split = FrozenPrefix.split(model)
        assert split is not None

        def step(forward: object, optimizer: torch.optim.Optimizer = optimizer) -> None:
            loss = F.cross_entropy(forward(x), y)  # type: ignore[operator]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        if stride == 32:
            steps[f"{stages} frozen, whole"] = (step, model)
            steps[f"{stages} frozen, sliced"] = (step, split)
        else:
            steps[f"3 frozen, sliced, output stride {stride}"] = (step, split)
    if args.fine:
        steps.update(_fine_steps(x, y))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step, forward in steps.values():  # warm-up
        step(forward)
    for _ in range(args.repeats):
        for name, (step, forward) in steps.items():
            t0 = time.perf_counter()
            step(forward)
            times[name].append(time.perf_counter() - t0)
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    for name, value in medians.items():
        print(f"{name:<50} {value:.3f} s/step")
    print(
        json.dumps(
            {
                "seconds_per_step": medians,
                "size": args.size,
                "batch": args.batch,
                "repeats": args.repeats,
                "device": cpu_description(),
            }
        )
    )


def _training_model(stages: int, output_stride: int = 32) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """EfficientNet-Lite0 (seeded, at ``output_stride``) with ``stages`` frozen, in training mode with the frozen
    BatchNorm layers in eval mode, as ``mieruka train`` sets it up, and its optimizer."""
    torch.manual_seed(0)
    model = build_model("tf_efficientnet_lite0", 6, output_stride=output_stride).to(memory_format=torch.channels_last)
    frozen = set(freeze_stages(model, stages))
    model.train()
    for module in frozen_batchnorms(model, frozen):
        module.eval()
    return model, torch.optim.AdamW(param_groups(model, 0.02), lr=1e-4)


def _fine_steps(x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[object, object]]:
    """The ``--guide-fine`` step, with PyTorch's double backward and with the grouped one."""
    model, optimizer = _training_model(3)
    fine = FineGuide(model)
    on = torch.arange(len(x)) % 3 == 0
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(int(on.sum()), 1, *x.shape[-2:], generator=g) > 0.99).float()

    def step(mode: object) -> None:
        with mode():  # type: ignore[operator]
            logits = model(x)
        loss = F.cross_entropy(logits, y) + fine.loss(logits, y, on, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {
        "3 frozen, guide-fine, PyTorch's double backward": (step, contextlib.nullcontext),
        "3 frozen, guide-fine, grouped double backward": (step, GroupedConvDoubleBackward),
    }


if __name__ == "__main__":
    main()
