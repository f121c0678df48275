"""Fine-tune a classifier on an inspection data set: ``mieruka train DATA --out RUN``.

``loop`` (the run: data, model, epochs, the saved model) uses ``checks`` (every file usable before the first step),
``frozen`` (frozen stages, and their fast CPU path), ``state`` (schedule, sampling, optimizer state for ``--resume``)
and ``curves`` (history and its plot). See docs/architecture.md.
"""

from mieruka.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
