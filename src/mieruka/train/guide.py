"""Right for the right reasons: teach the model to look at the marked defect (``train --guide masks``).

Where an NG training image has a marked region (a mask, or boxes rasterized to one), the loss gains

    L_guide = mean over those images of  Σ_{outside} CAM⁺ / (Σ CAM⁺ + ε),

the share of the true class's Grad-CAM energy that lies outside the region (1 − energy inside, the audit's own
figure), times ``guide_weight``. It is the explanation penalty of Ross et al. 2017 ("Right for the Right Reasons")
applied to the CAM, as GAIN's attention mining does (Li et al. 2018).

On a head of global average pooling + one linear layer, Grad-CAM of the last block is closed form:
∂y_c/∂A_k = W_ck / Z, so CAM_c = ReLU(Σ_k W_ck A_k) / Z — a weighted sum of the features the forward pass already
has, differentiable in both W and A, costing one einsum per batch (no second backward pass). Heads of any other
shape are refused with a message.

The region reaches the feature grid (stride 32: 8 × 8 cells at 256 px) by max pooling, so a cell that holds any
marked pixel counts as inside: a region smaller than a cell is never pushed out of its own cell. Masks ride the same
flips, rotations and affine jitter as their images (:func:`mieruka.augment.augment_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from mieruka.config import TrainConfig
from mieruka.data.annotations import read_region
from mieruka.data.sample import Sample
from mieruka.errors import DataError, MierukaError
from mieruka.explain.engine import closed_form_holds, fast_path_head, multiscale_layers
from mieruka.explain.maps import as_map

__all__ = [
    "GUIDE_CHOICES",
    "FineGuide",
    "GuideMasks",
    "WithFeatures",
    "guide_for",
    "guide_loss",
    "guided_head",
    "load_guide_masks",
]

GUIDE_CHOICES = ("auto", "masks", "none")
"""``auto``: ``masks`` where NG training images have regions and the head allows it, else ``none``."""

_EPS = 1e-6


@dataclass
class GuideMasks:
    """The marked regions of the NG training images, resized like the images.

    Attributes:
        masks: (M, 1, S, S) float tensor, 1 inside a region.
        slot: Per store index, the row of ``masks`` holding its region, or −1 (none: an OK image, or no region).
    """

    masks: torch.Tensor
    slot: np.ndarray

    def batch(self, pick: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of the batch with a region, as a bool (B,) tensor; their masks (B, 1, S, S), zeros elsewhere)."""
        rows = self.slot[pick]
        has = torch.from_numpy(rows >= 0)
        out = torch.zeros((len(pick), *self.masks.shape[1:]), dtype=self.masks.dtype)
        if bool(has.any()):
            out[has] = self.masks[torch.from_numpy(rows[rows >= 0])]
        return has, out


def load_guide_masks(
    samples: Sequence[Sample],
    sizes: Sequence[tuple[int, int] | None],
    train_idx: np.ndarray,
    ng: Sequence[bool],
    image_size: int,
    progress: bool,
) -> GuideMasks:
    """Read the region of every NG training image that has one (``samples`` / ``sizes`` / ``ng`` in store order).

    Raises:
        DataError: No NG training image has a region (there is nothing to guide with), or a region file is broken.
    """
    slot = np.full(len(samples), -1, dtype=np.int64)
    masks: list[np.ndarray] = []
    chosen = [int(i) for i in train_idx if ng[int(i)] and samples[int(i)].mask is not None and sizes[int(i)]]
    for i in tqdm(chosen, desc="reading training regions", disable=not progress, leave=False, unit="mask"):
        s, size = samples[i], sizes[i]
        assert s.mask is not None and size is not None
        region = read_region(Path(s.mask), s.image, size)
        if not region.any():
            continue
        small = Image.fromarray(region.astype(np.uint8) * 255).resize((image_size, image_size), Image.Resampling.BOX)
        slot[i] = len(masks)
        masks.append(np.asarray(small) > 0)  # any covered pixel stays marked: thin cracks survive the resize
    if not masks:
        raise DataError(
            "--guide masks: no NG training image has a marked region (a mask or a box file in the data set); train "
            "without --guide, or add the masks"
        )
    tensor = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    return GuideMasks(tensor, slot)


def guided_head(model: nn.Module, image_size: int) -> nn.Linear:
    """The linear classifier the closed-form CAM needs; refuses a head that is not average pooling + linear."""
    head = fast_path_head(model)
    ok = False
    if head is not None:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
                raw = model.forward_features(x.to(head.weight.device))  # type: ignore[operator]
                ok = closed_form_holds(as_map(model, raw), model.forward_head(raw), head)  # type: ignore[operator]
        finally:
            model.train(was)
    if head is None or not ok:
        raise MierukaError(
            f"--guide masks: {type(model).__name__}'s head is not global average pooling + one linear layer, so its "
            "CAM has no closed form to train; choose such an architecture (e.g. an EfficientNet, ResNet or ConvNeXt) "
            "or train without --guide"
        )
    return head


def guide_for(
    model: nn.Module, cfg: TrainConfig, masks: GuideMasks | None
) -> tuple[GuideMasks | None, nn.Linear | None]:
    """(masks, head) of a run that guides, or (None, None): ``--guide masks`` refuses a head without a closed-form
    CAM; ``auto`` then trains on the labels alone and says why."""
    if masks is None or cfg.guide == "none":
        return None, None
    try:
        return masks, guided_head(model, cfg.image_size)
    except MierukaError as exc:
        if cfg.guide == "masks":
            raise
        print(f"guide: off ({str(exc).removeprefix('--guide masks: ')})")
        return None, None


def guide_loss(
    model: nn.Module, features: torch.Tensor, head: nn.Linear, labels: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """The share of each image's true-class CAM energy outside its region, averaged (see the module docstring).

    Args:
        model: The classifier (for the layout of its features).
        features: ``forward_features`` of the images that have a region.
        head: The linear classifier.
        labels: (B,) true classes.
        masks: (B, 1, S, S) regions, 1 inside.
    """
    feats = as_map(model, features).float()  # (B, K, h, w)
    cam = torch.einsum("bkhw,bk->bhw", feats, head.weight.float()[labels]).relu()
    return _outside_share(cam, masks)


def _outside_share(energy: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean over the images of the share of ``energy`` (B, h, w) outside the regions (max-pooled to its grid)."""
    inside = F.adaptive_max_pool2d(masks.to(energy.device, energy.dtype), energy.shape[-2:])[:, 0] > 0.01
    total = energy.flatten(1).sum(1)
    outside = energy.masked_fill(inside, 0).flatten(1).sum(1)
    return (outside / (total + _EPS)).mean()


class FineGuide:
    """``--guide-fine W`` (experimental): a second guide term on a finer map than the last block's 8 × 8 grid, the
    share of the stride-16 stage's positive activations (summed over channels) that lies outside the region. The
    stage's LayerCAM map weighs those activations, so quiet ones outside the defect keep its map on the defect.
    A forward hook keeps the stage's output of the training step; no second-order gradient is needed."""

    def __init__(self, model: nn.Module):
        layers = multiscale_layers(model, min_reduction=16)
        self.layer = layers[0]
        self.output: torch.Tensor | None = None
        model.get_submodule(self.layer).register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self.output = output

    def loss(self, on: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        assert self.output is not None, "the guided step runs the model first"
        return _outside_share(self.output[on].float().relu().sum(1), masks)


class WithFeatures(nn.Module):
    """A timm classifier whose forward returns (logits, ``forward_features`` output): what the guided step runs
    (and what DistributedDataParallel wraps, so that its gradients are averaged as usual)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)  # type: ignore[operator]
        return self.model.forward_head(features), features  # type: ignore[operator]
