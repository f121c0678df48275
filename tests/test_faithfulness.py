from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mieruka.audit.faithfulness import (
    FaithfulnessConfig,
    auc,
    average_drop_increase,
    baseline_image,
    deletion_insertion,
    rank_correlation,
)
from mieruka.audit.run import run_audit

ID = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


class Brightness(nn.Module):
    """Logits (s, 0) with s = 20 × (mean brightness of the left half − 0.5): class 0 lives in the left half only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 20 * (x[:, :, :, : x.shape[3] // 2].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _left_right(b: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pixels = torch.ones(b, 3, size, size)  # white: class 0 with p = sigmoid(10)
    good = torch.zeros(b, size, size)
    good[:, :, : size // 2] = 1.0  # the map points at the left half, where the evidence is
    return pixels, good, 1.0 - good


def test_auc_trapezoid() -> None:
    assert auc(np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert auc(np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])) == pytest.approx([1.0, 0.5])


def test_deletion_and_insertion_reward_the_map_that_points_at_the_evidence() -> None:
    model = Brightness()
    pixels, good, bad = _left_right()
    cls = torch.zeros(2, dtype=torch.long)
    d_good, i_good = deletion_insertion(
        model, pixels, good, cls, config=FaithfulnessConfig(steps=4, fill="black"), **ID
    )
    d_bad, i_bad = deletion_insertion(model, pixels, bad, cls, config=FaithfulnessConfig(steps=4, fill="black"), **ID)
    p_white = float(torch.sigmoid(torch.tensor(10.0)))
    p_black = float(torch.sigmoid(torch.tensor(-10.0)))
    # hand computation: after deleting k/4 of the pixels in the good order, the left half keeps 1 - 2k/4 (k ≤ 2)
    left = np.array([1.0, 0.5, 0.0, 0.0, 0.0])
    expected = 1 / (1 + np.exp(-20 * (left - 0.5)))
    np.testing.assert_allclose(d_good[0], expected, atol=1e-6)
    assert d_good[0, 0] == pytest.approx(p_white) and d_good[0, -1] == pytest.approx(p_black)
    assert i_good[0, 0] == pytest.approx(p_black) and i_good[0, -1] == pytest.approx(p_white)
    # the bad order deletes the right half first: nothing changes until half the pixels are gone
    np.testing.assert_allclose(d_bad[0, :3], p_white, atol=1e-6)
    assert auc(d_good).mean() < auc(d_bad).mean() - 0.3
    assert auc(i_good).mean() > auc(i_bad).mean() + 0.3


def test_baselines() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(baseline_image(x, "black"), torch.zeros_like(x))
    m = baseline_image(x, "mean")
    assert torch.allclose(m[:, :, 0, 0], x.mean(dim=(2, 3)))
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(baseline_image(flat, "blur"), flat, atol=1e-6)  # blur keeps a flat image
    assert baseline_image(x, "blur").std() < x.std() / 2
    with pytest.raises(ValueError, match="fill 'gray'"):
        baseline_image(x, "gray")


def test_average_drop_and_increase_by_hand() -> None:
    model = Brightness()
    pixels, good, bad = _left_right()
    cls = torch.zeros(2, dtype=torch.long)
    drop, inc = average_drop_increase(model, pixels, good, cls, **ID)
    np.testing.assert_allclose(drop, 0.0, atol=1e-6)  # the map keeps the left half intact
    assert not inc.any()
    drop, inc = average_drop_increase(model, pixels, bad, cls, **ID)
    p_white = 1 / (1 + np.exp(-10.0))
    p_black = 1 / (1 + np.exp(10.0))
    np.testing.assert_allclose(drop, (p_white - p_black) / p_white, rtol=1e-5)
    # class 1 gains when the left half goes dark: the masked image raises its confidence
    drop, inc = average_drop_increase(model, pixels, bad, torch.ones(2, dtype=torch.long), **ID)
    assert inc.all() and np.allclose(drop, 0.0)


def test_rank_correlation() -> None:
    a = torch.arange(16.0).view(1, 4, 4)
    assert rank_correlation(a, a)[0] == pytest.approx(1.0)
    assert rank_correlation(a, -a)[0] == pytest.approx(-1.0)
    assert rank_correlation(a, torch.zeros(1, 4, 4))[0] == 0.0


def test_audit_with_faithfulness(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    run = run_audit(
        tiny_run / "model.safetensors",
        synth_dir,
        tmp_path / "audit",
        split="all",
        methods=["gradcam"],
        faithfulness=5,
        device="cpu",
        progress=False,
    )
    f = run.summary.faithfulness
    assert f is not None and f.images == 5 and f.config.steps == 16 and f.config.fill == "blur"
    all_ = run.summary.figures("gradcam").faithfulness
    assert all_ is not None and all_.images == 5
    assert 0 <= all_.deletion_auc <= 1 and 0 <= all_.insertion_auc <= 1
    assert 0 <= all_.average_drop_percent <= 100 and 0 <= all_.increase_rate <= 1
    check = f.randomization_check["gradcam"]
    assert check.mean_abs_rank_correlation is not None
    assert check.passed == (check.mean_abs_rank_correlation < 0.5)
    base = f.baselines["random_order"]
    assert 0 <= base["deletion_auc"] <= 1 and 0 <= base["insertion_auc"] <= 1
    lines = (tmp_path / "audit" / "audit.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    col = header.index("deletion_auc")
    filled = [line.split(",")[col] for line in lines[1:]]
    assert sum(v != "" for v in filled) == 5
    assert "id='faithfulness'" in (tmp_path / "audit" / "report" / "index.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "audit" / "summary.json").read_text(encoding="utf-8"))["faithfulness"]["images"] == 5


def test_grad_cam_passes_the_randomization_check_on_a_trained_model(tiny_run: Path, synth_dir: Path) -> None:
    """Grad-CAM maps of the trained model and of a re-initialized one share little ranking."""
    from mieruka.audit.faithfulness import rank_correlation as rho
    from mieruka.checkpoint import load_checkpoint
    from mieruka.data.images import read_image
    from mieruka.explain.engine import explain
    from mieruka.explain.targets import TrueClass
    from mieruka.models import build_model
    from mieruka.runtime import prepare

    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    images = [read_image(p) for p in sorted(synth_dir.glob("crack/*.png"))[:6]]
    x = torch.from_numpy(prepare(images, info))
    trained = explain(model, x, method="gradcam")
    torch.manual_seed(0)
    random_model = build_model(info.arch, len(info.classes)).eval()
    cls = trained.probs.argmax(1)
    randomized = explain(random_model, x, method="gradcam", targets=[TrueClass()], labels=cls)
    r = rho(trained.maps[:, 0], randomized.maps[:, 0])
    assert np.abs(r).mean() < 0.5
