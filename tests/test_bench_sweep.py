"""The per-epoch record of bench/train_sweep.py and the epoch rules of bench/epoch_rules.py (benchmark tools whose
figures BENCHMARKS.md quotes, so they are tested like the package)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mieruka.inference
import mieruka.train.loop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from epoch_rules import choose_epochs, run_figures
from train_sweep import _run_one


def test_choose_epochs_follows_each_rule() -> None:
    bal = [0.5, 0.8, 0.8, 0.7] + [0.75] * 8 + [0.9, 0.9]
    loss = [1.0, 0.6, 0.5, 0.7] + [0.6] * 8 + [0.4, 0.45]
    picks = choose_epochs(bal, loss)
    # Epoch 3 ties epoch 2 with a lower loss; nothing better follows for 8 epochs, so early stopping ends at 11.
    assert picks["library"] == 3
    assert picks["library, no early stop"] == 13  # 0.9 first at 13; 14 ties with a higher loss
    assert picks["ties to later"] == 14
    assert picks["lowest val loss"] == 13
    assert picks["last epoch"] == 14


@pytest.mark.slow
def test_per_epoch_record_reproduces_the_run(tmp_path: Path, synth_dir: Path) -> None:
    options = {"pretrained": "none", "image_size": 64, "epochs": 3, "batch_size": 8, "patience": 0, "freeze_stages": 0}
    row = _run_one(str(synth_dir), str(tmp_path), "t", options, 0, torch.get_num_threads(), per_epoch=True)
    assert mieruka.train.loop.predict_logits is mieruka.inference.predict_logits  # the hook is gone again
    with np.load(tmp_path / "t-s0" / "epochs.npz") as z:
        assert z["val_logits"].shape == (3, len(z["y_val"]), len(z["classes"]))
        assert z["test_logits"].shape == (3, len(z["y_test"]), len(z["classes"]))
        assert np.allclose(z["val_d4"].sum(-1), 1, atol=1e-5)
        figures = run_figures(z, (0.97, 0.95))
    # The record picks the run's own epoch and gives its test accuracy, as evaluate measured it on the saved model.
    chosen = figures["library, no early stop"]["none"]
    assert chosen["epoch"] == row["best_epoch"]
    assert chosen["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-4)
    assert set(figures["library"]) == {"none", "d4"}
