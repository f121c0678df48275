"""One sample: an image, its class, its verdict, its region and its split."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NG", "OK", "Sample", "nfc"]

OK = "OK"
NG = "NG"


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it.

    Attributes:
        image: Path of the image file.
        label: Class name.
        verdict: ``"OK"`` (the part passes) or ``"NG"`` (it is rejected), from the class.
        mask: Path of the ground-truth defect mask (non-zero = defect) or box annotation file, if any.
        split: ``"train"``, ``"val"``, ``"test"``, or None before splitting.
    """

    image: Path
    label: str
    verdict: str
    mask: Path | None = None
    split: str | None = None


def nfc(text: str) -> str:
    """Unicode NFC form: macOS file systems hand out decomposed names (NFD); class names compare composed."""
    return unicodedata.normalize("NFC", text)
