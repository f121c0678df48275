"""The run's model, written once when training ends, complete: the best epoch's weights with their NG threshold and
test-time views (:meth:`mieruka.train.loop._Trainer.finish`), the explanation method (given, or chosen on the
validation regions from ``best.safetensors``), the reference distributions ``monitor`` compares the line with
(:mod:`mieruka.record.reference`) and, with MLflow, the tracked run's id. No later step rewrites it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from mieruka.audit.selection import method_after_training
from mieruka.checkpoint import ModelInfo, save_checkpoint
from mieruka.config import TrainConfig
from mieruka.record.reference import REFERENCE_KEY, drift_reference
from mieruka.train.runs import BEST_FILE

__all__ = ["TrackedAs", "write_model"]


@dataclass(frozen=True)
class TrackedAs:
    """Where the run's data came from, the tracker that records it, and whether to show progress bars."""

    data: Any
    tracker: str = "none"
    progress: bool = True


def write_model(
    run: Path,
    cfg: TrainConfig,
    history: Sequence[dict[str, float]],
    final: tuple[nn.Module, ModelInfo],
    how: TrackedAs,
) -> None:
    """Write ``run/model.safetensors`` once (see the module docstring) and record the run with the tracker."""
    from mieruka.tracking import RUN_ID_KEY, log_training

    best, info = final
    weights = run / BEST_FILE if (run / BEST_FILE).is_file() else run / "model.safetensors"  # a run of an older version
    method, selection = method_after_training(weights, how.data, cfg.explain_method, cfg.device, how.progress)
    info = replace(info, explain_method=method, method_selection=selection or {})
    reference = drift_reference(best, info, how.data)
    if reference is not None:  # what `mieruka monitor` compares the line with
        info = replace(info, summary={**info.summary, REFERENCE_KEY: reference})
        print(f"drift reference: {reference['n']} validation images (stored in the model)")

    def write(run_id: str | None) -> None:
        summary = info.summary if run_id is None else {**info.summary, RUN_ID_KEY: run_id}
        save_checkpoint(run / "model.safetensors", best, replace(info, summary=summary))

    run_id = log_training(how.tracker, run, cfg.to_dict(), history, str(how.data), write=write)
    if run_id is not None:
        print(f"tracked: MLflow run {run_id}")
