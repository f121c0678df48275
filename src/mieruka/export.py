"""``mieruka export``: one ONNX graph from image to class probabilities *and* the heatmap of the predicted class.

The graph is :class:`~mieruka.explain.graph.ExplainedModel`. The ONNX file describes itself: the model's
:class:`~mieruka.checkpoint.ModelInfo` (classes, verdicts, input size, normalization, NG threshold), the CAM method
and the output names are in its metadata, in the format :mod:`mieruka.runtime` reads. Every file is checked with
ONNX Runtime against PyTorch before the command succeeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mieruka._io import atomic_write
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.deploy.exported import sealed_onnx_bytes
from mieruka.deploy.precision import PrecisionCheck
from mieruka.errors import MierukaError
from mieruka.explain.graph import ExplainedModel, graph_method
from mieruka.runtime import ONNX_FORMAT, ONNX_FORMAT_VERSION, OnnxModel

__all__ = ["MIN_OPSET", "ExportOptions", "ExportResult", "export_model", "export_onnx", "onnx_metadata"]

MIN_OPSET = 18
"""The oldest opset the exporter writes directly (older ones would need a lossy conversion of the graph)."""

PROB_TOLERANCE = 1e-4
MAP_TOLERANCE = 1e-3


def onnx_metadata(info: ModelInfo, method: str | None, outputs: tuple[str, ...]) -> dict[str, str]:
    """The key/value pairs written into the ONNX file (values are strings; JSON where structured)."""
    return {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "info": info.to_json(),
        "method": method or "",
        "outputs": json.dumps(list(outputs)),
        # the essentials again as plain keys, for tools that do not parse the description
        "classes": json.dumps(list(info.classes), ensure_ascii=False),
        "verdicts": json.dumps(info.verdicts, ensure_ascii=False),
        "image_size": str(info.image_size),
        "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)),
        "input": "image: float32 (batch, 3, image_size, image_size), RGB scaled to 0–1 then (x - mean) / std",
    }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch."""

    path: Path
    outputs: tuple[str, ...]
    method: str | None
    max_prob_diff: float
    max_map_diff: float | None
    seconds: float
    precision: str = "fp32"
    check: PrecisionCheck | None = None
    """fp16 / int8 / OpenVINO: the converted graph against the float32 ONNX one (:mod:`mieruka.deploy.precision`)."""
    format: str = "onnx"


@dataclass(frozen=True)
class ExportOptions:
    """What ``export`` writes (the command's options; :func:`export_onnx` takes them as keywords).

    Attributes:
        method: The CAM method computed in the graph (default: the model's stored one where the graph can compute
            it, :func:`~mieruka.explain.graph.graph_method`).
        all_classes: Also output every class's heatmap.
        opset: ONNX opset.
        check_batch: Batch size of the random probe used for the check (also proves the batch axis is dynamic).
        precision: ``fp32``, ``fp16`` or ``int8`` (:mod:`mieruka.deploy.precision`): the float32 graph is written
            and checked first, then converted and checked against it.
        calib: The data set whose images calibrate int8 and check fp16/int8 (needed for int8).
        calib_split: The split they come from (``train`` or ``val``).
        calib_images: How many (default :data:`~mieruka.deploy.precision.CALIB_IMAGES`).
        fmt: ``onnx``, or ``openvino`` (OpenVINO IR: ``out`` is ``NAME.xml``, with ``NAME.bin`` beside it), checked
            against the float32 ONNX graph like the other conversions.
    """

    method: str | None = None
    all_classes: bool = False
    opset: int = 18
    check_batch: int = 3
    precision: str = "fp32"
    calib: str | os.PathLike[str] | None = None
    calib_split: str = "train"
    calib_images: int | None = None
    fmt: str = "onnx"


def export_onnx(model_path: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any) -> ExportResult:
    """Export a checkpoint to one self-contained ONNX file and check it against PyTorch with ONNX Runtime.

    Args:
        model_path: A ``.safetensors`` model written by ``mieruka train``.
        out: Destination ``.onnx`` file (written atomically, weights inside).
        options: :class:`ExportOptions`' fields (``precision=…``, ``calib=…``, ``fmt=…``…).

    Raises:
        MierukaError: A check fails (float32: probabilities differ from PyTorch by more than 1e-4 or maps by more
            than 1e-3; fp16/int8: a tolerance of :data:`~mieruka.deploy.precision.TOLERANCES`); nothing is left at
            ``out``.
    """
    o = ExportOptions(**options)
    method, precision, fmt, calib = o.method, o.precision, o.fmt, o.calib
    from mieruka.deploy import precision as low

    if precision not in low.PRECISIONS:
        raise MierukaError(f"--precision {precision!r}: choose {', '.join(low.PRECISIONS)}")
    if fmt not in ("onnx", "openvino"):
        raise MierukaError(f"--format {fmt!r}: choose onnx or openvino")
    if precision == "int8" and calib is None:
        raise MierukaError("--precision int8 needs --calib DATA: images of the training split calibrate it")
    model, info, _ = load_checkpoint(model_path, "cpu")
    if method is None:  # the model's stored explanation method, where the graph can compute it
        method, note = graph_method(info.explain_method, info.method_selection)
        if note:
            print(f"note: {note}")
    x = None
    if calib is not None:
        x = low.calibration_images(info, calib, o.calib_split, o.calib_images or low.CALIB_IMAGES)
    graph = {"method": method, "all_classes": o.all_classes, "opset": o.opset, "check_batch": o.check_batch}
    if precision == "fp32" and fmt == "onnx":
        return export_model(model, info, out, **graph)  # type: ignore[arg-type]
    return _export_converted(model, info, Path(out), graph, precision, fmt, x)


def _export_converted(
    model: nn.Module,
    info: ModelInfo,
    out: Path,
    options: dict[str, object],
    precision: str,
    fmt: str,
    x: np.ndarray | None,
) -> ExportResult:
    """The float32 graph written and checked beside ``out``, converted to ``precision`` and/or OpenVINO IR,
    checked against it, and moved to ``out`` only when every check holds."""
    from mieruka.deploy import precision as low

    if fmt == "openvino" and out.suffix.lower() != ".xml":
        raise MierukaError(f"--out {out}: OpenVINO IR is written as NAME.xml (and NAME.bin beside it)")
    start = time.perf_counter()
    reference = export_model(model, info, out.with_name(f".{out.name}.fp32.onnx"), **options)  # type: ignore[arg-type]
    temps = [reference.path]
    try:
        if x is None:  # without data: a random probe
            x = np.random.default_rng(0).standard_normal((16, 3, info.image_size, info.image_size)).astype("f4")
        candidate = reference.path
        if precision != "fp32":
            candidate = out.with_name(f".{out.name}.{precision}.onnx")
            temps.append(candidate)
            low.convert(reference.path, candidate, precision, x)
        if fmt == "openvino":
            check = _openvino_check(candidate, out, precision, reference.path, x, temps)
        else:
            check = low.compare(reference.path, candidate, precision, x)
            _raise_missed(check, out, precision)
            os.replace(candidate, out)
    finally:
        for path in temps:
            path.unlink(missing_ok=True)
    return ExportResult(
        path=out,
        outputs=reference.outputs,
        method=reference.method,
        max_prob_diff=reference.max_prob_diff,
        max_map_diff=reference.max_map_diff,
        seconds=time.perf_counter() - start,
        precision=precision,
        check=check,
        format=fmt,
    )


def _raise_missed(check: PrecisionCheck, out: Path, what: str) -> None:
    missed = check.failures()
    if missed:
        raise MierukaError(
            f"{out}: the {what} graph missed its check against the float32 ONNX graph on {check.images} images: "
            + "; ".join(missed)
            + "; nothing was written"
        )


def _openvino_check(
    candidate: Path, out: Path, precision: str, reference: Path, x: np.ndarray, temps: list[Path]
) -> PrecisionCheck:
    """Convert ``candidate`` to IR beside ``out``, check it against the float32 ONNX graph, then move it to
    ``out`` (the ``.xml`` and its ``.bin``)."""
    from mieruka.deploy import openvino
    from mieruka.deploy.exported import onnx_metadata_of
    from mieruka.deploy.precision import compare

    xml = out.with_name(f".{out.stem}.tmp.xml")
    temps += [xml, xml.with_suffix(".bin")]
    openvino.write_ir(candidate, xml, {**onnx_metadata_of(candidate), "precision": precision})
    check = compare(reference, openvino.OpenVinoModel(xml), precision, x)
    _raise_missed(check, out, f"OpenVINO {precision}")
    os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(xml, out)
    return check


def export_model(
    model: nn.Module,
    info: ModelInfo,
    out: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    all_classes: bool = False,
    opset: int = 18,
    check_batch: int = 3,
) -> ExportResult:
    """:func:`export_onnx` for a model already in memory (on the CPU) and its description."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the installation
        raise MierukaError("exporting needs the onnx extra: pip install 'mieruka[onnx]'") from None
    newest = _newest_opset(onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= opset <= newest:
        raise MierukaError(
            f"--opset {opset}: choose an opset from {MIN_OPSET} to {newest} (the newest this install writes)"
        )
    start = time.perf_counter()
    wrapped = ExplainedModel(model, method, all_classes=all_classes).eval()
    names = wrapped.output_names
    size = info.image_size
    example = torch.zeros(2, 3, size, size)
    # The exporter reports its progress (and recoverable failures) on stdout and stderr; keep the command's output
    # to what the user needs: a real failure raises.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        torch.inference_mode(False),
        torch.no_grad(),
    ):
        program = torch.onnx.export(
            wrapped,
            (example,),
            None,
            input_names=["image"],
            output_names=list(names),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise MierukaError("the ONNX exporter returned nothing")
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise MierukaError(f"--opset {opset}: the exporter wrote opset {written} instead; nothing was written")
    meta = onnx_metadata(info, method if wrapped.has_heatmap else None, names)
    proto.doc_string = (
        f"mieruka {info.arch}: {len(info.classes)} classes ({', '.join(info.classes)}); "
        f"outputs {', '.join(names)}" + (f"; heatmap by {method}" if wrapped.has_heatmap else "")
    )
    data = sealed_onnx_bytes(proto, meta)
    path = atomic_write(out, lambda p: p.write_bytes(data))
    prob_diff, map_diff = _check(wrapped, path, size, check_batch)
    return ExportResult(
        path=path,
        outputs=names,
        method=method if wrapped.has_heatmap else None,
        max_prob_diff=prob_diff,
        max_map_diff=map_diff,
        seconds=time.perf_counter() - start,
    )


def _newest_opset(onnx_newest: int) -> int:
    """The newest opset both the installed onnx and PyTorch's exporter know."""
    try:
        from torch.onnx import _constants

        return min(onnx_newest, int(_constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):  # pragma: no cover - depends on the PyTorch version
        return onnx_newest


def _check(wrapped: ExplainedModel, path: Path, size: int, batch: int) -> tuple[float, float | None]:
    """Run the file with ONNX Runtime and PyTorch on the same random batch; raise if they disagree."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapped(x)]
    got = OnnxModel(path).session.run(None, {"image": x.numpy()})
    prob_diff = float(np.abs(got[0] - expected[0]).max())
    map_diff = max((float(np.abs(g - e).max()) for g, e in zip(got[1:], expected[1:], strict=True)), default=None)
    if prob_diff > PROB_TOLERANCE or (map_diff is not None and map_diff > MAP_TOLERANCE):
        path.unlink(missing_ok=True)
        raise MierukaError(
            f"{path}: ONNX Runtime disagrees with PyTorch (probabilities by {prob_diff:.2e}, maps by "
            f"{map_diff if map_diff is not None else 0:.2e}); the file was removed"
        )
    return prob_diff, map_diff
