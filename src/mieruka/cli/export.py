"""``mieruka export``: the model as one ONNX graph with class probabilities and heatmap."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_out_file, int_at_least

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    from mieruka.deploy.precision import PRECISIONS
    from mieruka.explain.graph import EXPORT_METHODS

    p = sub.add_parser(
        "export",
        help="export a model to ONNX: class probabilities and heatmap in one graph",
        description="Write one self-contained ONNX file whose graph maps an image batch (dynamic batch size) to "
        "class probabilities and the heatmap of the predicted class, computed by the one-forward-pass CAM "
        "(no autograd needed at run time). Class names, verdicts, input size and normalization go into the "
        "file's metadata. The file is checked with ONNX Runtime against PyTorch before the command succeeds.",
    )
    p.add_argument("model", type=Path, help="model .safetensors written by mieruka train")
    p.add_argument(
        "--format",
        choices=("onnx", "openvino"),
        default="onnx",
        help="onnx (default), or openvino: OpenVINO IR (--out NAME.xml, NAME.bin beside it; mieruka[openvino])",
    )
    add_out_file(p, "the .onnx (or OpenVINO .xml) file to write", required=True)
    p.add_argument(
        "--method",
        choices=EXPORT_METHODS,
        help="CAM method computed in the graph (default: the model's stored method where the graph can compute it, "
        "else the best such candidate of its selection table)",
    )
    p.add_argument("--all-classes", action="store_true", help="also output every class's heatmap ('heatmaps')")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default); fp16 for GPUs; int8: ONNX Runtime static quantization (QDQ, per-channel weights) "
        "calibrated on --calib. fp16 and int8 are checked against fp32 before the file is written",
    )
    p.add_argument("--calib", type=Path, metavar="DATA", help="data set whose images calibrate int8 (needed for it)")
    p.add_argument(
        "--calib-split", choices=("train", "val"), default="train", help="split of --calib to use (default train)"
    )
    p.add_argument(
        "--calib-images", type=int_at_least(1), default=256, help="calibration images drawn from it (default 256)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mieruka.export import export_onnx

    r = export_onnx(
        args.model,
        args.out,
        method=args.method,
        all_classes=args.all_classes,
        opset=args.opset,
        precision=args.precision,
        calib=args.calib,
        calib_split=args.calib_split,
        calib_images=args.calib_images,
        fmt=args.format,
    )
    if r.method is None:
        print(
            "note: the model's head is not global average pooling + one linear layer, so the graph cannot compute "
            "a heatmap; exported class probabilities only"
        )
    diffs = f"probabilities {r.max_prob_diff:.1e}" + (
        f", maps {r.max_map_diff:.1e}" if r.max_map_diff is not None else ""
    )
    size = r.path.stat().st_size + (r.path.with_suffix(".bin").stat().st_size if r.format == "openvino" else 0)
    print(f"wrote {r.path} ({size / 1e6:.1f} MB, {r.seconds:.0f} s): outputs {', '.join(r.outputs)}")
    print(f"checked with ONNX Runtime against PyTorch: largest difference {diffs}")
    if r.check is not None:
        c = r.check
        corr = f", heatmap correlation {c.heatmap_corr:.3f}" if c.heatmap_corr is not None else ""
        print(
            f"{'OpenVINO ' if r.format == 'openvino' else ''}{r.precision} against the fp32 ONNX graph on "
            f"{c.images} images: probabilities {c.mean_prob_diff:.4f} apart on average "
            f"(largest {c.max_prob_diff:.3f}), same class on {c.agreement:.1%}{corr}"
        )
