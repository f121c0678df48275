"""FP16 and INT8 graphs of an exported model, and the checks every one of them passes before it is kept.

* **fp16** — every float tensor of the graph in half precision, inputs and outputs left in float32 (ONNX Runtime's
  ``float16`` converter): for GPUs.
* **int8** — ONNX Runtime's static quantization in QDQ format, weights per output channel (signed), activations
  per tensor (unsigned), calibrated by min–max on images of the training (or validation) split. The convolutions,
  residual additions and ReLU6 clips are quantized; the head, the softmax and the heatmap's arithmetic stay in float.

Each converted graph is compared with the float32 graph on the check images (the calibration images, or a random
probe for fp16 without data) and kept only when all of :data:`TOLERANCES` hold; otherwise it is removed and the
error says which check missed.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mieruka.checkpoint import ModelInfo
from mieruka.deploy.exported import onnx_metadata_of, sealed_onnx_bytes
from mieruka.errors import DataError, MierukaError

if TYPE_CHECKING:
    from mieruka.runtime import Runtime

__all__ = [
    "CALIB_IMAGES",
    "PRECISIONS",
    "TOLERANCES",
    "PrecisionCheck",
    "Tolerance",
    "calibration_images",
    "compare",
    "convert",
]

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_IMAGES = 256
"""Calibration images drawn (seeded) from the split: min–max ranges settle well before that
(docs/benchmarks-history.md#onnx)."""
QUANTIZED_OPS = ("Conv", "Add", "Clip")


@dataclass(frozen=True)
class Tolerance:
    """How far a converted graph may be from float32 on the check images.

    Attributes:
        mean_prob: Largest mean absolute difference of the class probabilities.
        agreement: Smallest share of images with the same predicted class.
        heatmap_corr: Smallest mean (over images) Pearson correlation of the predicted class's heatmap.
    """

    mean_prob: float
    agreement: float
    heatmap_corr: float


TOLERANCES = {
    # float32 in another runtime (OpenVINO IR against the ONNX graph): the same numbers but for rounding
    "fp32": Tolerance(mean_prob=1e-4, agreement=0.99, heatmap_corr=0.999),
    "fp16": Tolerance(mean_prob=1e-3, agreement=0.99, heatmap_corr=0.99),
    "int8": Tolerance(mean_prob=0.02, agreement=0.97, heatmap_corr=0.95),
}


@dataclass(frozen=True)
class PrecisionCheck:
    """A converted graph against float32 on ``images`` check images."""

    precision: str
    images: int
    mean_prob_diff: float
    max_prob_diff: float
    agreement: float
    heatmap_corr: float | None

    def failures(self) -> list[str]:
        """The checks of :data:`TOLERANCES` that missed, in words (empty: the graph is kept)."""
        tol = TOLERANCES[self.precision]
        out = []
        if self.mean_prob_diff > tol.mean_prob:
            out.append(f"probabilities differ by {self.mean_prob_diff:.4f} on average (allowed {tol.mean_prob})")
        if self.agreement < tol.agreement:
            out.append(f"the same class on {self.agreement:.1%} of the images (needed {tol.agreement:.0%})")
        if self.heatmap_corr is not None and self.heatmap_corr < tol.heatmap_corr:
            out.append(f"heatmap correlation {self.heatmap_corr:.3f} (needed {tol.heatmap_corr})")
        return out


def calibration_images(
    info: ModelInfo, data: str | os.PathLike[str], split: str = "train", n: int = CALIB_IMAGES, seed: int = 0
) -> np.ndarray:
    """Up to ``n`` images of ``split`` of the data set ``data``, drawn with ``seed``, as model input (N, 3, S, S)."""
    from mieruka.data.store import ImageStore, normalize

    dataset = info.load_dataset(data)
    samples = dataset.split(split)
    if not samples:
        raise DataError(f"--calib {data}: the {split} split is empty")
    rng = np.random.default_rng(seed)
    chosen = [samples[i] for i in sorted(rng.permutation(len(samples))[:n])]
    store = ImageStore([s.image for s in chosen], info.image_size, progress=False, bit_depth=info.bit_depth)
    bad = {b.path for b in store.bad}
    good = [i for i, s in enumerate(chosen) if s.image not in bad]
    if not good:
        raise DataError(f"--calib {data}: none of the {len(chosen)} {split} images could be read")
    return normalize(store.get(good), info.mean, info.std).numpy()


def convert(src: Path, dst: Path, precision: str, calib: np.ndarray | None) -> None:
    """Write the ``precision`` version of the float32 graph ``src`` to ``dst`` (metadata kept, ``precision`` added)."""
    import onnx

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    elif precision == "int8":
        if calib is None or not len(calib):
            raise MierukaError("--precision int8 needs calibration images: give --calib DATA")
        _quantize(src, dst, calib)
        model = onnx.load(str(dst))
    else:
        raise MierukaError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    dst.write_bytes(sealed_onnx_bytes(model, {**onnx_metadata_of(src), "precision": precision}))


def _quantize(src: Path, dst: Path, calib: np.ndarray, batch: int = 8) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": calib[i : i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    # the quantizer logs advice about optional pre-processing on the root logger; the command's output stays short
    with contextlib.redirect_stderr(io.StringIO()), _quiet_root_logger():
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
        )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float(np.array_equal(a, b))


def compare(
    reference: Path | Runtime, converted: Path | Runtime, precision: str, x: np.ndarray, batch: int = 16
) -> PrecisionCheck:
    """Run both graphs (``.onnx`` paths, or loaded runtimes) on ``x`` and measure what :class:`Tolerance` bounds."""
    from mieruka.runtime import OnnxModel

    ref = OnnxModel(reference) if isinstance(reference, Path) else reference
    low = OnnxModel(converted) if isinstance(converted, Path) else converted
    outs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]] = []
    for i in range(0, len(x), batch):
        outs.append((*ref.run(x[i : i + batch]), *low.run(x[i : i + batch])))
    p_ref = np.concatenate([o[0] for o in outs])
    p_low = np.concatenate([o[2] for o in outs])
    corr = None
    if outs and outs[0][1] is not None and outs[0][3] is not None:
        maps: Sequence[tuple[np.ndarray, np.ndarray]] = [
            (a, b)
            for o in outs
            for a, b in zip(o[1], o[3], strict=True)  # type: ignore[arg-type]
        ]
        corr = float(np.mean([_pearson(a, b) for a, b in maps]))
    diff = np.abs(p_ref - p_low)
    return PrecisionCheck(
        precision=precision,
        images=len(x),
        mean_prob_diff=float(diff.mean()),
        max_prob_diff=float(diff.max()),
        agreement=float((p_ref.argmax(1) == p_low.argmax(1)).mean()),
        heatmap_corr=corr,
    )
