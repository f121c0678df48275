from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mieruka.evaluate import plot_confusion
from mieruka.fonts import cjk_font_path, use_cjk_font


def test_bundled_cjk_font_renders_japanese_without_missing_glyphs(tmp_path: Path) -> None:
    assert cjk_font_path() is not None and cjk_font_path().suffix == ".ttf"  # type: ignore[union-attr]
    assert use_cjk_font() == "IPAexGothic"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph … missing from font(s)" for tofu
        plot_confusion(np.array([[3, 1], [0, 2]]), ["欠陥A", "正常(キズ)"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
