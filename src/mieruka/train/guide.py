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
from mieruka.explain.methods import LayerCAM

__all__ = [
    "FineGuide",
    "GuideMasks",
    "WithFeatures",
    "guide_for",
    "guide_loss",
    "guided_head",
    "load_guide_masks",
]

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
    """``--guide-fine W``: the guide on the finer maps of the multi-scale explanation. For every stage the
    multi-scale map uses before the last block (:func:`mieruka.explain.engine.multiscale_layers`; on an
    EfficientNet-Lite the stages of stride 8, 16 and 32), the true class's LayerCAM map
    ReLU(Σ_k ReLU(∂y_c/∂A_k) · A_k) (Jiang et al. 2021), and the share of its energy outside the region, averaged
    over the stages.

    The gradients are taken with ``create_graph=True``, so the penalty trains the weights that shape them (a
    second-order term, as in Ross et al. 2017): a second backward pass of the trainable layers. Its depthwise
    convolutions take the grouped double backward of :mod:`mieruka.train.grouped_conv` (the training step runs
    under it); a step still costs about 5× the default's on a CPU (docs/benchmarks-history.md#guide). A frozen stage's
    output is made a leaf that requires grad, so its map (ImageNet features weighed by the trainable layers' gradients)
    is guided too. Forward hooks keep the stages' outputs of the training step."""

    def __init__(self, model: nn.Module):
        self.layers = multiscale_layers(model)[:-1]
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        for name in self.layers:
            model.get_submodule(name).register_forward_hook(self._keeper(name))

    def _keeper(self, name: str) -> Any:
        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            if not self.model.training or not torch.is_grad_enabled():
                return None  # validation, the EMA copy's evaluation, explanations: untouched
            if not output.requires_grad:  # a frozen stage: a leaf, so the gradient reaches it
                output = output.detach().requires_grad_(True)
            self.outputs[name] = output
            return output

        return keep

    def maps(self, logits: torch.Tensor, labels: torch.Tensor, on: torch.Tensor) -> list[torch.Tensor]:
        """Per stage, the true class's LayerCAM maps (n, h, w) of the rows ``on`` of the last training step,
        differentiable in the weights."""
        acts = [self.outputs.pop(n) for n in self.layers]
        score = logits[on].float().gather(1, labels[on, None]).sum()
        grads = torch.autograd.grad(score, acts, create_graph=True)
        layercam = LayerCAM()  # the registry's formula, on tensors that keep their graph
        return [layercam.combine(a[on].float(), g[on].float()[:, None])[:, 0] for g, a in zip(grads, acts, strict=True)]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, on: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The mean over the stages of the share of the true class's LayerCAM energy outside the regions of the
        rows ``on`` (``masks``: their regions)."""
        return torch.stack([_outside_share(m, masks) for m in self.maps(logits, labels, on)]).mean()


class WithFeatures(nn.Module):
    """A timm classifier whose forward returns (logits, ``forward_features`` output): what the guided step runs
    (and what DistributedDataParallel wraps, so that its gradients are averaged as usual)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)  # type: ignore[operator]
        return self.model.forward_head(features), features  # type: ignore[operator]
