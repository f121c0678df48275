"""Options and printing shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from mieruka.data.splits import SPLIT_CHOICES
from mieruka.tta import TTA_CHOICES

__all__ = ["add_common", "add_model", "add_split", "add_tta", "fmt_rate"]


def add_tta(p: argparse.ArgumentParser) -> None:
    """``--tta`` for commands that classify with a trained model (default: the model's own choice)."""
    p.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        help="test-time augmentation: average over flips (flip: 2 views) or flips and 90° turns (d4: 8 "
        "views); default: the model's, chosen on the validation split at training time",
    )


def add_split(p: argparse.ArgumentParser, default: str, what: str = "split of the data set") -> None:
    p.add_argument("--split", default=default, choices=SPLIT_CHOICES, help=f"{what} (default {default})")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_model(p: argparse.ArgumentParser, help: str = "model .safetensors") -> None:
    p.add_argument("model", type=Path, help=help)


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
