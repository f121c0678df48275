"""The run's history: one row per epoch in ``history.csv`` / ``history.json``, and ``training_curve.png``."""

from __future__ import annotations

from pathlib import Path

from mieruka._io import atomic_write, write_csv, write_json

__all__ = ["HISTORY_FIELDS", "plot_history", "write_history"]

HISTORY_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "seconds")


def write_history(history: list[dict[str, float]], run: Path) -> None:
    """``history.csv`` and ``history.json`` of the epochs so far."""
    write_csv(run / "history.csv", HISTORY_FIELDS, [[h[k] for k in HISTORY_FIELDS] for h in history])
    write_json(run / "history.json", history)


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="accuracy")
    ax2.plot(epochs, [h["val_balanced_accuracy"] for h in history], "o-", label="balanced accuracy")
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="Validation")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
