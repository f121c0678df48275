"""Explanation by example: the training images that a model finds most alike, in the features its classifier reads.

A heatmap says *where* a model looked; its nearest training images say *what it took the part for*. Both come from
one place: the globally pooled features that the final linear layer turns into class scores, compared by cosine
similarity. When a wrongly classified image's nearest training image carries the label the model gave, the model did
what its training data taught. That is worth a look at the labels before more training: real data sets photograph a
part more than once (under other light, from another station), and label each photograph on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mieruka.data.store import ImageStore
from mieruka.inference import predict_probs_and_features

__all__ = ["NEAR_SIZE", "backbone_features", "nearest", "neighbor_sheet", "pooled_features"]


def pooled_features(
    model: nn.Module,
    store: ImageStore,
    indices: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
) -> torch.Tensor:
    """(N, C) unit-length pooled features (the classifier's input) of the store's images, on the CPU.

    The same computation as the features :func:`mieruka.inference.predict_probs_and_features` returns beside the
    probabilities, so that images classified with their features and reference images compare alike.
    """
    model.eval()
    return predict_probs_and_features(
        model, store, indices, mean=mean, std=std, batch_size=batch_size, progress=progress, desc=desc
    )[1]


def nearest(
    queries: torch.Tensor, references: torch.Tensor, k: int, exclude: Sequence[tuple[int, int]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities (Q, k), highest first, and indices (Q, k) of each query's ``k`` nearest references.

    ``queries`` and ``references`` are unit-length rows; ``exclude`` lists (query, reference) pairs never to match,
    such as an image and itself.
    """
    sims = queries @ references.T
    for q, r in exclude:
        sims[q, r] = -float("inf")
    top = sims.topk(min(k, references.shape[0] - (1 if exclude else 0)), dim=1)
    return top.values.numpy(), top.indices.numpy()


def neighbor_sheet(
    rows: Sequence[tuple[np.ndarray, str, Sequence[tuple[np.ndarray, str]]]], height: int = 160
) -> Image.Image:
    """One row per query: the query image, then its neighbors, each captioned below.

    Args:
        rows: ``(image, caption, [(neighbor image, caption), …])`` with (H, W, 3) uint8 images.
        height: Height of every thumbnail in pixels (aspect ratio kept).
    """
    from mieruka.explain.render import grid, thumbnail

    cols = 1 + max(len(n) for _, _, n in rows)
    cells: list[Image.Image] = []
    for image, caption, near in rows:
        row = [thumbnail(image, caption, height=height)] + [thumbnail(im, c, height=height) for im, c in near]
        row += [Image.new("RGB", (1, 1), "white")] * (cols - len(row))
        cells.extend(row)
    return grid(cells, cols=cols)


NEAR_SIZE = 128
"""Side of the copies :func:`backbone_features` reads."""


def backbone_features(paths: Sequence[Path], progress: bool) -> np.ndarray:
    """Unit-length pooled features of the ImageNet backbone (EfficientNet-Lite0) for :data:`NEAR_SIZE`-px copies of
    ``paths``: what ``mieruka check`` compares to find near duplicates."""
    import torch
    from tqdm.auto import tqdm

    from mieruka.data.store import ImageStore, normalize
    from mieruka.models import build_model, load_pretrained, normalization_for

    arch = "tf_efficientnet_lite0"
    torch.manual_seed(0)
    model = load_pretrained(build_model(arch, 2), arch, "imagenet").eval()
    mean, std = normalization_for(arch)
    store = ImageStore(list(paths), NEAR_SIZE, progress=progress, cache="ram")
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(paths), 64), desc="features", disable=not progress, leave=False):
            x = normalize(store.get(range(start, min(start + 64, len(paths)))), mean, std)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True))  # type: ignore[operator]
    feats = torch.cat(out) if out else torch.zeros(0, 1)
    return torch.nn.functional.normalize(feats, dim=1).numpy()
