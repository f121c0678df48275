"""``train --guide masks``: masks follow their images, the loss is the CAM's share outside the region, and it
trains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import TINY
from torch import nn

from mieruka.augment import AugmentConfig, augment_batch, augment_with_masks
from mieruka.config import TrainConfig
from mieruka.errors import DataError, MierukaError
from mieruka.train.guide import FineGuide, guide_loss, guided_head


def test_masks_follow_their_images_and_the_images_do_not_change() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    masks = torch.zeros(6, 1, 32, 32)
    masks[:, :, 2:6, 20:30] = 1.0
    geometric = AugmentConfig(degrees=0, scale=0, translate=0, brightness=0, contrast=0)
    plain = augment_batch(x, geometric, torch.Generator().manual_seed(3))
    out, moved = augment_with_masks(x, masks, geometric, torch.Generator().manual_seed(3))
    assert torch.equal(out, plain)  # the same draws: guiding does not change what the images see
    assert moved is not None
    for i in range(6):  # flips and 90° turns move the mask exactly as they move the image: find the marked block
        marked = x[i, 0][masks[i, 0] > 0]
        assert torch.equal(out[i, 0][moved[i, 0] > 0].sort().values, marked.sort().values)
    full = AugmentConfig()
    a = augment_batch(x, full, torch.Generator().manual_seed(5))
    b, m = augment_with_masks(x, masks, full, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and m is not None and m.shape == (6, 1, 32, 32)


def test_guide_loss_is_the_share_of_cam_energy_outside_the_region() -> None:
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, 0] = torch.tensor([[3.0, 1.0], [0.0, 0.0]])  # class 0's CAM: 3 in the top-left cell, 1 beside it
    feats[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 5.0]])
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1, 1] = 1.0  # one pixel in the top-left cell marks the whole cell (max pooling)
    model = nn.Identity()
    loss = guide_loss(model, feats, head, torch.tensor([0]), mask)
    assert loss.item() == pytest.approx(1 / 4)  # 1 of the energy 3 + 1 lies outside
    assert guide_loss(model, feats, head, torch.tensor([1]), mask).item() == pytest.approx(1.0)
    feats.requires_grad_(True)
    guide_loss(model, feats, head, torch.tensor([0]), mask).backward()
    assert feats.grad is not None and feats.grad[0, 0, 0, 1] > 0 and feats.grad[0, 0, 0, 0] < 0


def test_fine_guide_is_layercam_of_the_multiscale_stages_and_trains_through_their_gradients() -> None:
    from mieruka.explain import TrueClass, explain
    from mieruka.train.frozen import freeze_stages

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)
    frozen = set(freeze_stages(model, 3))  # blocks.2 (stride 8) is frozen, its map is guided all the same
    fine = FineGuide(model)
    assert fine.layers == ("blocks.2", "blocks.4", "blocks.6")  # the multi-scale map's stages before the last
    model.train()
    for m in model.modules():  # training mode for the hooks, the numbers of evaluation (no batch statistics)
        if isinstance(m, (nn.BatchNorm2d, nn.Dropout)):
            m.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2])
    on = torch.tensor([True, True])
    maps = fine.maps(model(x), y, on)
    for name, got in zip(
        fine.layers, maps, strict=True
    ):  # the explanation engine's LayerCAM of the true class, resized alike
        ref = explain(model, x, method="layercam", targets=[TrueClass()], labels=y, layers=[name]).maps[:, 0]
        up = torch.nn.functional.interpolate(got[:, None].detach(), size=(64, 64), mode="bilinear")[:, 0]
        assert torch.allclose(up, ref, rtol=1e-4, atol=1e-6 * float(ref.max())), name
    # the share outside: the top-left 8 x 8 block marks one cell of the stride-8 grid and one of the others
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 0:8, 0:8] = 1.0
    maps = fine.maps(model(x), y, on)
    expected = torch.stack([(1 - m[:, 0, 0] / m.flatten(1).sum(1)).mean() for m in maps]).mean()
    model.zero_grad()
    loss = fine.loss(model(x), y, on, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    loss.backward()  # second order: the weights that shape the gradients learn
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["classifier.weight"] is not None and float(grads["classifier.weight"].abs().sum()) > 0
    assert grads["blocks.5.0.conv_pw.weight"] is not None and float(grads["blocks.5.0.conv_pw.weight"].abs().sum()) > 0
    assert all(grads[n] is None for n in frozen)
    model.eval()
    model(x)
    assert not fine.outputs  # validation and explanations run untouched


def test_a_head_without_a_closed_form_cam_is_refused() -> None:
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)  # conv after the pooling
    with pytest.raises(MierukaError, match="--guide masks: .*not global average pooling"):
        guided_head(model, 64)
    ok = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert guided_head(ok, 64) is ok.get_classifier()


def test_guided_training_on_synthetic_masks(synth_dir: Path, tiny_run: Path, tmp_path: Path) -> None:
    from mieruka.train import train

    cfg = replace(TINY, guide="masks", guide_weight=2.0)
    result = train(synth_dir, tmp_path / "guided", cfg, progress=False)
    saved = json.loads((tmp_path / "guided" / "config.json").read_text())["config"]
    assert saved["guide"] == "masks" and saved["guide_weight"] == 2.0
    plain = json.loads((tiny_run / "history.json").read_text())
    guided = list(result.history)
    assert guided[0]["train_loss"] > plain[0]["train_loss"]  # the same draws plus a non-negative guide term
    assert np.isfinite([h["train_loss"] for h in guided]).all()


def test_guide_without_any_region_is_a_clear_error(synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    from mieruka.train import train

    data = tmp_path / "nomasks"
    shutil.copytree(synth_dir, data, ignore=shutil.ignore_patterns("masks", "manifest.csv"))
    with pytest.raises(DataError, match="--guide masks: no NG training image has a marked region"):
        train(data, tmp_path / "run", replace(TINY, guide="masks"), progress=False)


def test_guide_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--guide must be one of auto, masks, none"):
        TrainConfig(guide="boxes")
    with pytest.raises(ValueError, match="--guide-weight must not be negative"):
        TrainConfig(guide_weight=-1)
    with pytest.raises(ValueError, match="--guide-fine must not be negative"):
        TrainConfig(guide_fine=-0.5)
    with pytest.raises(ValueError, match="--explain-method 'nope'"):
        TrainConfig(explain_method="nope")


def test_train_command_guides_on_synth_data_and_chooses_the_method(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mieruka.checkpoint import read_info

    cli = [sys.executable, "-m", "mieruka"]
    subprocess.run([*cli, "synth", str(tmp_path / "d"), "--per-class", "6", "--size", "64", "--quiet"], check=True)
    done = subprocess.run(
        [*cli, "train", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--guide", "masks", "--epochs", "1",
         "--guide-fine", "0.5", "--image-size", "64", "--pretrained", "none", "--freeze-stages", "0",
         "--batch-size", "8", "--quiet"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "guide: " in done.stdout and "explanation: " in done.stdout
    info = read_info(tmp_path / "r" / "model.safetensors")
    assert info.config["guide"] == "masks" and info.config["guide_fine"] == 0.5
    assert info.method_selection["chosen"] == info.explain_method  # auto, the default, chose on validation
    assert [c["method"] for c in info.method_selection["candidates"]] == ["gradcam", "gradcam++", "layercam"]


def test_guide_auto_trains_on_labels_alone_where_nothing_is_marked(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from mieruka.train import train

    data = tmp_path / "nomasks"
    shutil.copytree(synth_dir, data, ignore=shutil.ignore_patterns("masks", "manifest.csv"))
    train(data, tmp_path / "run", replace(TINY, guide="auto", epochs=1), progress=False)
    assert "guide: off (no NG training image has a marked region)" in capsys.readouterr().out
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)
    from mieruka.train.guide import GuideMasks, guide_for

    masks = GuideMasks(torch.zeros(1, 1, 8, 8), np.zeros(1, dtype=np.int64))
    assert guide_for(model, replace(TINY, guide="auto"), masks) == (None, None)
    assert "guide: off (mobilenetv3" in capsys.readouterr().out.lower()
    with pytest.raises(MierukaError):
        guide_for(model, replace(TINY, guide="masks"), masks)
