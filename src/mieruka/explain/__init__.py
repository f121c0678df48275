"""Explanations: the CAM family of heatmaps, targets, the fast and general paths, and their pictures.

``methods`` (the registry) → ``engine`` (maps of a batch) → ``scaling`` / ``render`` (display) → ``run`` (the
command); ``spec`` parses method specs, ``graph`` is the graph-friendly explained model that export and runtime share.
See docs/architecture.md.

``from mieruka.explain import explain, METHODS`` is the library entry point; ``mieruka explain`` the command.
"""

from mieruka.explain.engine import ExplainedBatch, explain
from mieruka.explain.methods import METHODS, CAMMethod
from mieruka.explain.targets import ClassTarget, NGScore, PredictedClass, Target, TrueClass

__all__ = [
    "METHODS",
    "CAMMethod",
    "ClassTarget",
    "ExplainedBatch",
    "NGScore",
    "PredictedClass",
    "Target",
    "TrueClass",
    "explain",
    "methods_table",
]


def methods_table() -> str:
    """The Markdown table of methods in the README, generated from :data:`METHODS`."""
    rows = ["| method | paper | formula | gradients | fast path |", "|---|---|---|---|---|"]
    for name, cls in METHODS.items():
        fast = "yes" if cls.fast_path else f"no ({cls.slow_note})"
        rows.append(f"| `{name}` | {cls.paper} | {cls.formula} | {'yes' if cls.uses_gradients else 'no'} | {fast} |")
    return "\n".join(rows)
