"""A font that renders Japanese class names (欠陥A, 正常(キズ)) in every picture mieruka draws.

The IPAexGothic font ships in the ``matplotlib-fontja`` package; we locate its file without importing that package
(whose import changes global matplotlib settings) and register it ourselves, once, when a picture is drawn.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

__all__ = ["cjk_font_path", "use_cjk_font"]


@functools.cache
def cjk_font_path() -> Path | None:
    """Path of the bundled IPAexGothic TrueType file, or None when the package is missing."""
    spec = importlib.util.find_spec("matplotlib_fontja")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "fonts" / "ipaexg.ttf"
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def use_cjk_font() -> str | None:
    """Register the CJK font with matplotlib and put it first in the sans-serif fallback list.

    Latin text keeps matplotlib's default face (DejaVu Sans); glyphs it lacks fall back to IPAexGothic. Returns the
    font's family name, or None when no CJK font is available.
    """
    path = cjk_font_path()
    if path is None:
        return None
    from matplotlib import font_manager, rcParams

    font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    # A list of families makes matplotlib fall back glyph by glyph (matplotlib ≥ 3.6).
    rcParams["font.family"] = ["DejaVu Sans", name]
    return name
