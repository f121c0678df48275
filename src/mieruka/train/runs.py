"""The run folder: a finished run is never overwritten by accident, and ``--resume`` continues only the same run.

``train DATA --out RUN`` refuses a folder that already holds files unless ``--resume`` (continue it) or
``--overwrite`` (start again) is given; a folder holding only what an attempt that stopped before its first epoch
wrote (:data:`BEFORE_TRAINING`) is reused. ``--resume`` takes the run's saved configuration; options given again must
equal it, except a longer ``--epochs`` (the run is extended: the learning-rate schedule is stretched to the new
length) and where it runs (``--device``, ``--cache-gb``).
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from mieruka.config import TrainConfig
from mieruka.errors import MierukaError

__all__ = ["BEFORE_TRAINING", "BEST_FILE", "RUN_FILES", "option_name", "prepare_run", "resumed_config"]

BEST_FILE = "best.safetensors"
"""The best epoch's weights while the run trains (``model.safetensors`` is written once, at the end, from them)."""

RUN_FILES = (
    "model.safetensors",
    BEST_FILE,
    "resume.safetensors",
    "config.json",
    "split.csv",
    "history.csv",
    "history.json",
    "training_curve.png",
    "bad_images.csv",
)
"""What a run writes; ``--overwrite`` removes them before the new run starts."""

_FREE_ON_RESUME = ("epochs", "device", "cache_gb", "cache")

BEFORE_TRAINING = frozenset({"config.json", "split.csv", "bad_images.csv"})
"""What a run writes before its first epoch: a folder that holds nothing else is an attempt that stopped before
training (a bad image, say), and the next attempt reuses it, so the advice it printed works as given."""


def option_name(field: str) -> str:
    """The command-line option of a configuration field (``image_size`` → ``--image-size``)."""
    special = {"ok_classes": "--ok", "augment": "--config [augment]"}
    return special.get(field, "--" + field.replace("_", "-"))


def prepare_run(run: Path, *, resume: bool, overwrite: bool) -> None:
    """Create the run folder, refusing one that holds files unless resuming or overwriting (not both: ``train``
    refuses that before anything else)."""
    if run.exists() and not run.is_dir():
        raise MierukaError(f"--out {run}: a file, not a folder")
    if not resume and run.is_dir():
        present = sorted(p.name for p in run.iterdir())
        if present and set(present) <= BEFORE_TRAINING:
            print(f"{run}: reusing the folder of an attempt that stopped before training ({', '.join(present)})")
            overwrite = True
        if present and not overwrite:
            shown = ", ".join(present[:4]) + (", …" if len(present) > 4 else "")
            raise MierukaError(
                f"--out {run}: the folder already holds files ({shown}); pass --resume to continue that run or "
                "--overwrite to replace it, or choose another folder"
            )
        if overwrite:
            for name in RUN_FILES:
                (run / name).unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)


def resumed_config(run: Path, requested: TrainConfig | None) -> TrainConfig:
    """The saved configuration of the run in ``run``, checked against (and extended by) ``requested``."""
    cfg_path = run / "config.json"
    if not (run / "resume.safetensors").is_file() or not cfg_path.is_file():
        raise MierukaError(f"--resume: {run} holds no interrupted run (no resume.safetensors and config.json)")
    try:
        saved = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8"))["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MierukaError(f"--resume: {cfg_path} is damaged ({exc})") from None
    if requested is None:
        return saved
    differ = [
        f"{option_name(f.name)} {getattr(saved, f.name)!r} in the run, {getattr(requested, f.name)!r} now"
        for f in fields(TrainConfig)
        if f.name not in _FREE_ON_RESUME and getattr(saved, f.name) != getattr(requested, f.name)
    ]
    if requested.epochs < saved.epochs:
        differ.append(f"--epochs {saved.epochs} in the run, {requested.epochs} now (a run can be extended, not cut)")
    if differ:
        raise MierukaError(
            f"--resume: {run} was started with other options: {'; '.join(differ)}. Resume with the run's options "
            "(see its config.json), or start a new run with --overwrite or another --out"
        )
    if requested.epochs > saved.epochs:
        print(
            f"extending {run} from {saved.epochs} to {requested.epochs} epochs "
            "(the learning-rate schedule is stretched to the new length)"
        )
    return replace(
        saved, epochs=requested.epochs, device=requested.device, cache_gb=requested.cache_gb, cache=requested.cache
    )
