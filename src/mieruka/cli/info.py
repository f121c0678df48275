"""``mieruka info``, ``mieruka methods`` and ``mieruka archs``: what a model file, the explanation methods and the
architectures are."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["register", "run_archs", "run_info", "run_methods"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "methods",
        help="list the explanation methods (Markdown table)",
        description="Print the explanation methods mieruka implements as a Markdown table: name, "
        "paper, formula, whether it needs gradients and whether the one-forward-pass fast path "
        "applies on a global-average-pooling + linear head.",
    )
    p.set_defaults(func=run_methods)

    p = sub.add_parser(
        "info",
        help="print a model file's description",
        description="Print the description stored in a model file as JSON: architecture, classes, "
        "verdict map, input size, normalization, explanation layer, NG threshold, training "
        "configuration and summary. Checks the file's integrity on the way.",
    )
    p.add_argument("model", type=Path, help="model .safetensors written by mieruka train, or .onnx by mieruka export")
    p.set_defaults(func=run_info)

    p = sub.add_parser(
        "archs",
        help="list timm architectures",
        description="List the timm architecture names that --arch accepts. Offline ImageNet weights "
        "exist for tf_efficientnet_lite0/1/2; the others train with --pretrained none or weights you "
        "give as a .safetensors file.",
    )
    p.add_argument("filter", nargs="?", help="wildcard filter, e.g. 'resnet*'")
    p.set_defaults(func=run_archs)


def run_methods(args: argparse.Namespace) -> None:
    from mieruka.explain import methods_table

    print(methods_table())


def run_info(args: argparse.Namespace) -> None:
    from mieruka.checkpoint import read_info

    if args.model.suffix.lower() == ".onnx":
        from mieruka.runtime import OnnxModel

        m = OnnxModel(args.model)
        description = {**asdict(m.info), "onnx": {"method": m.method, "outputs": list(m.outputs)}}
        print(json.dumps(description, indent=2, ensure_ascii=False))
        return
    print(json.dumps(asdict(read_info(args.model)), indent=2, ensure_ascii=False))


def run_archs(args: argparse.Namespace) -> None:
    import timm

    for name in timm.list_models(args.filter or "*"):
        print(name)
