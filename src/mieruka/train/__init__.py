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

__all__ = ["TrainResult", "train"]


class _CallableModule(types.ModuleType):
    def __call__(self, data: Any, *, out: Any, **options: Any) -> Any:
        from mieruka.api import train as api_train

        return api_train(data, out=out, **options)


sys.modules[__name__].__class__ = _CallableModule
