"""Experiment tracking: a training run, and the evaluations and audits of its model, recorded for comparison.

* ``mlflow`` (``pip install 'mieruka[mlflow]'``, MLflow 2): a run per training, in ``MLFLOW_TRACKING_URI`` when it
  is set, else in the local file store ``./mlruns``, MLflow 2's default (MLflow 3, if installed instead, keeps file
  stores behind ``MLFLOW_ALLOW_FILE_STORE=true``; mieruka sets it for that store only). Training logs the
  configuration as parameters, every epoch's figures as metrics (step = epoch), the model, the curve and the
  history; the run's id is stored in the model's summary, so that ``evaluate`` and ``audit`` with ``--tracker
  mlflow`` log their figures and files to the same run (or to ``--run-id``).
* ``tensorboard``: event files under ``RUN/tb/`` (``pip install 'mieruka[tensorboard]'``), the epochs' figures as
  scalars.

The figures are logged once the run has written them, from its own files, so a tracker never changes what is trained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mieruka.errors import MierukaError

__all__ = ["RUN_ID_KEY", "TRACKERS", "check_tracker", "log_evaluation", "log_training", "stored_run_id"]

TRACKERS = ("none", "mlflow", "tensorboard")
RUN_ID_KEY = "mlflow_run_id"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise MierukaError("--tracker mlflow needs MLflow: pip install 'mieruka[mlflow]'") from None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(Path("mlruns").resolve().as_uri())
    return mlflow


def check_tracker(tracker: str) -> None:
    """Raise before any work when ``tracker`` cannot record: its package is missing, or MLflow's store (a folder or
    SQLite file named by ``MLFLOW_TRACKING_URI``, else ``./mlruns``) lies under something that is not a writable
    folder. A server's address is not contacted here."""
    if tracker == "tensorboard":
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise MierukaError("--tracker tensorboard needs TensorBoard: pip install 'mieruka[tensorboard]'") from None
    if tracker != "mlflow":
        return
    _mlflow()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    store = _local_store(uri) if uri else Path("mlruns").resolve()
    if store is None:
        return
    where = f"MLFLOW_TRACKING_URI {uri}" if uri else "its default store ./mlruns"
    folder = store.parent if uri.startswith("sqlite") else store
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise MierukaError(
            f"--tracker mlflow: {where} points to {store}, but {existing} is a file, not a folder; set "
            "MLFLOW_TRACKING_URI to a folder, a sqlite:/// file or a server"
        )
    if not os.access(existing, os.W_OK):
        raise MierukaError(f"--tracker mlflow: {where}: cannot write under {existing}")


def _local_store(uri: str) -> Path | None:
    """The local path of a ``file:``, ``sqlite:`` or plain-path tracking URI (None for a server)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path or uri)).resolve()
    if parsed.scheme == "sqlite":
        return Path(unquote(uri.split(":///", 1)[-1])).resolve() if ":///" in uri else None
    return None


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts as ``a.b`` keys, lists and None left out."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None and not isinstance(value, (list, tuple)):
        out[prefix] = value
    return out


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numeric entries, named in the characters MLflow accepts (``normal (scratch)`` → ``normal _scratch_``)."""
    return {
        re.sub(r"[^\w.\- /]", "_", k): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def log_training(
    tracker: str,
    run_dir: Path,
    config: dict[str, Any],
    history: Sequence[dict[str, float]],
    data: str,
    write: Callable[[str | None], None] = lambda _: None,
) -> str | None:
    """Record a finished training run; returns the MLflow run id (None for other trackers).

    ``write(run_id)`` writes the run's model: with MLflow once the tracked run has its id (which the model stores)
    and before the model is logged as an artifact; otherwise first, with None."""
    if tracker not in TRACKERS:
        raise MierukaError(f"--tracker {tracker!r}: choose {', '.join(TRACKERS)}")
    if tracker != "mlflow":
        write(None)
        if tracker == "tensorboard":
            _tensorboard(run_dir, history)
        return None
    mlflow = _mlflow()
    mlflow.set_experiment("mieruka")
    with mlflow.start_run(run_name=run_dir.name) as run:
        write(str(run.info.run_id))
        params = {k: str(v)[:500] for k, v in _flat("", config, {}).items()}
        mlflow.log_params({**params, "data": str(data)})
        for row in history:
            step = int(row.get("epoch", 0))
            mlflow.log_metrics(_numbers({k: v for k, v in row.items() if k != "epoch"}), step=step)
        for name in ("model.safetensors", "training_curve.png", "history.csv", "history.json", "split.csv"):
            if (run_dir / name).is_file():
                mlflow.log_artifact(str(run_dir / name))
        return str(run.info.run_id)


def _tensorboard(run_dir: Path, history: Sequence[dict[str, float]]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MierukaError("--tracker tensorboard needs TensorBoard: pip install 'mieruka[tensorboard]'") from None
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for row in history:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, int(row.get("epoch", 0)))


def stored_run_id(summary: dict[str, Any]) -> str | None:
    value = summary.get(RUN_ID_KEY)
    return str(value) if value else None


def log_evaluation(
    tracker: str, run_id: str | None, figures: dict[str, Any], files: Sequence[Path], prefix: str
) -> str | None:
    """Log ``figures`` (numbers, nested keys flattened, under ``prefix``) and ``files`` to MLflow run ``run_id``
    (a new run when None); returns the run id."""
    if tracker == "none":
        return None
    if tracker != "mlflow":
        raise MierukaError(f"--tracker {tracker}: evaluate and audit log to mlflow only")
    mlflow = _mlflow()
    mlflow.set_experiment("mieruka")
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_metrics(_numbers(_flat(prefix, figures, {})))
        for path in files:
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=prefix)
        return str(run.info.run_id)
