"""Any timm architecture: one model of each family (random weights, 64 px) trains through mieruka's loop,
explains an image (token maps laid on their patch grid, channels-last maps permuted) and exports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from mieruka.checkpoint import load_checkpoint
from mieruka.errors import MierukaError
from mieruka.explain.engine import as_map, explain
from mieruka.models import build_model, normalization_for

FAST = {"resnet", "efficientnet"}
"""Families whose head is average pooling + one linear layer straight after the feature map (the closed form)."""

FAMILIES = {
    "resnet": "resnet18",
    "convnext": "convnext_atto",
    "regnet": "regnetx_002",
    "mobilenetv3": "mobilenetv3_small_050",
    "efficientnet": "efficientnet_b0",
    "vit": "vit_tiny_patch16_224",  # deit_tiny_patch16_224 is this very class (VisionTransformer) and shape
    "swin": "swin_tiny_patch4_window7_224",
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_trains_explains_and_exports(family: str, synth_dir: Path, tmp_path: Path) -> None:
    from conftest import TINY

    from mieruka.export import export_onnx
    from mieruka.train import train

    arch = FAMILIES[family]
    cfg = replace(TINY, arch=arch, epochs=1, batch_size=16, tta="none")
    train(synth_dir, tmp_path / "run", cfg, progress=False)
    model, info, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert (info.mean, info.std) == normalization_for(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ex = explain(model, x)
    assert ex.maps.shape == (2, 1, 64, 64) and torch.isfinite(ex.maps).all() and float(ex.maps.min()) >= 0
    slow = explain(model, x, allow_fast_path=False)
    scale = float(slow.maps.max()) or 1.0
    assert float((ex.maps - slow.maps).abs().max()) / scale < 1e-4  # the fast path, where taken, equals autograd
    result = export_onnx(tmp_path / "run" / "model.safetensors", tmp_path / "m.onnx")
    assert result.max_prob_diff < 1e-4
    assert (result.method is not None) == ex.fast_path  # a heatmap in the graph exactly where the closed form holds
    assert ex.fast_path == (family in FAST)


def test_token_and_channels_last_maps_are_laid_on_the_grid() -> None:
    class Tokens(nn.Module):
        num_prefix_tokens = 1
        patch_embed = type("P", (), {"grid_size": (2, 3)})()

    tokens = torch.arange(2 * 7 * 4, dtype=torch.float32).view(2, 7, 4)  # 1 class token + 2×3 patches, 4 channels
    grid = as_map(Tokens(), tokens)
    assert grid.shape == (2, 4, 2, 3)
    assert torch.equal(grid[1, :, 1, 2], tokens[1, 1 + 5])  # patch 5 = row 1, column 2; class token dropped

    class ChannelsLast(nn.Module):
        output_fmt = "NHWC"

    nhwc = torch.randn(2, 3, 5, 8)
    assert torch.equal(as_map(ChannelsLast(), nhwc), nhwc.permute(0, 3, 1, 2))
    conv = torch.randn(2, 8, 3, 5)
    assert as_map(nn.Identity(), conv) is conv

    class Odd(Tokens):
        patch_embed = type("P", (), {"grid_size": (3, 3)})()

    with pytest.raises(MierukaError, match="do not fill a 3×3 patch grid"):
        as_map(Odd(), tokens)


def test_transformers_are_built_for_the_input_size() -> None:
    vit = build_model("vit_tiny_patch16_224", 3, image_size=96)
    assert vit(torch.zeros(1, 3, 96, 96)).shape == (1, 3)
    assert normalization_for("vit_tiny_patch16_224") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # its own config
    assert normalization_for("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    cnn = build_model("resnet18", 3, image_size=96)  # no img_size argument: any size
    assert cnn(torch.zeros(1, 3, 80, 80)).shape == (1, 3)
