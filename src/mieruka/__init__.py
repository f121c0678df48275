"""mieruka (見える化, "making visible"): explainable visual inspection.

Train a defect classifier on part images, evaluate it as inspection does (per class and OK/NG), explain every
prediction with a heatmap, and ship it. ``import mieruka`` stays cheap: the heavy modules (torch, timm) load only
when a submodule that needs them is imported. How the package is laid out: docs/architecture.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
