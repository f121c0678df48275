"""Fine-tune a classifier on an inspection data set: ``mieruka train DATA --out RUN``.

``loop`` (the run: data, model, epochs, the saved model) uses ``checks`` (every file usable before the first step),
``frozen`` (frozen stages, and their fast CPU path), ``state`` (schedule, sampling, optimizer state for ``--resume``)
and ``curves`` (history and its plot). See docs/architecture.md.

Importing this package makes ``mieruka.train`` the package rather than the function of ``mieruka/__init__``, so the
package itself is callable: ``mieruka.train(data, out=…, **options)`` works either way (:func:`mieruka.api.train`).
"""

import sys
import types
from typing import Any

from mieruka.train.loop import TrainResult, train

__all__ = ["TrainResult", "train", "train_with_options"]


def train_with_options(data: Any, *, out: Any, progress: bool = False, **options: Any) -> TrainResult:
    """:func:`train` with :class:`~mieruka.config.TrainConfig`'s fields as keywords (and ``resume``,
    ``overwrite``): what ``mieruka.train(data, out=…, epochs=…)`` runs."""
    from mieruka.config import TrainConfig

    resume, overwrite = bool(options.pop("resume", False)), bool(options.pop("overwrite", False))
    return train(data, out, TrainConfig(**options), resume=resume, overwrite=overwrite, progress=progress)


class _CallableModule(types.ModuleType):
    def __call__(self, data: Any, *, out: Any, **options: Any) -> TrainResult:
        return train_with_options(data, out=out, **options)


sys.modules[__name__].__class__ = _CallableModule
