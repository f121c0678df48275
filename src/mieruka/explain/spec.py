"""Method specs: ``NAME[:LAYER+LAYER…][/FUSION]``, the way ``audit --method`` names what to explain with."""

from __future__ import annotations

from typing import NamedTuple

from mieruka.explain.engine import FUSIONS
from mieruka.explain.methods import METHODS

__all__ = ["AUTO_CHOICES", "MULTISCALE", "MethodSpec", "parse_method_spec"]

AUTO_CHOICES = ("auto", "auto-all")
"""What may stand for a method spec to have it chosen on validation (:mod:`mieruka.audit.selection`): ``auto`` among
the maps the exported graph computes, ``auto-all`` among every candidate."""

MULTISCALE = "multiscale"
"""The layer word for every feature stage from stride 8 down plus the final feature map
(:func:`mieruka.explain.engine.multiscale_layers`)."""


class MethodSpec(NamedTuple):
    """A parsed spec: the method, its layers (empty: the model's default layer) and how several layers fuse."""

    method: str
    layers: tuple[str, ...]
    fusion: str


def parse_method_spec(spec: str) -> MethodSpec:
    """``NAME[:LAYER+LAYER…][/FUSION]`` → (method, layers, fusion).

    No layers means the model's default layer; the layer word ``multiscale`` stands for the multi-scale layer set;
    ``FUSION`` is ``mean`` (default) or ``product``. Example: ``layercam:multiscale/product``.
    """
    body, _, fusion = spec.partition("/")
    name, _, layer_part = body.partition(":")
    if name not in METHODS:
        raise ValueError(f"--method {spec!r}: unknown method {name!r}; choose from {', '.join(METHODS)}")
    fusion = fusion or "mean"
    if fusion not in FUSIONS:
        raise ValueError(f"--method {spec!r}: unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    return MethodSpec(name, tuple(n for n in layer_part.split("+") if n), fusion)
