"""Console text: padding by display width, so tables of Japanese class names line up."""

from __future__ import annotations

import unicodedata

__all__ = ["display_width", "ljust"]


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide and full-width characters (欠陥, ＯＫ) count 2, combining marks 0."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` display columns."""
    return text + " " * max(0, width - display_width(text))
