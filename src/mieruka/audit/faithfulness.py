"""Does the heatmap show what the model uses? Faithfulness checks that need no ground truth.

* **Deletion / insertion** (Petsiuk et al., RISE, BMVC 2018): pixels are taken in the order of the map, most
  relevant first. *Deletion* replaces a growing share of them with a baseline image and follows the class
  probability down; *insertion* starts from the baseline and puts the original pixels back. Both curves have
  ``steps + 1`` points at shares 0, 1/steps, …, 1 of the pixels; the area under each (trapezoid rule over the
  share, so in [0, 1]) is reported. Faithful maps give a low deletion AUC and a high insertion AUC. The baseline
  (``fill``) is ``blur`` by default — a Gaussian blur with σ = 5 px at 224 px (scaled with the input size), as in
  RISE's insertion, which wipes out small defects while keeping the part's look — or ``black`` or ``mean`` (each
  channel's mean). Pixels of equal relevance are taken in raster order. A random ordering of the pixels is the chance
  baseline.
* **Average drop / increase in confidence** (Chattopadhay et al., Grad-CAM++, WACV 2018): the image multiplied by its
  map scaled to [0, 1]; drop = max(0, y − o) / y per image (y, o: the class probability on the image and on the
  masked image), averaged and given in percent; increase = the share of images with o > y.
* **Model-randomization sanity check** (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018): the maps of
  the trained model against those of the same architecture with freshly initialized weights, per image as a
  Spearman rank correlation. A method that explains the *model* must change when the model is destroyed: the check
  passes when the mean absolute correlation (as in the paper's figures) is below ``max_rank_correlation`` (0.5). A
  constant map counts as ρ = 0.

All of them run batched, without gradients, on the model's input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from mieruka.data.store import ImageStore, normalize
from mieruka.explain.engine import ExplainedBatch, explain
from mieruka.explain.scaling import normalize_for_display
from mieruka.explain.targets import TrueClass

if TYPE_CHECKING:
    from mieruka.checkpoint import ModelInfo

__all__ = [
    "FILLS",
    "FaithfulnessCheck",
    "FaithfulnessConfig",
    "FaithfulnessRun",
    "RandomizationCheck",
    "auc",
    "average_drop_increase",
    "baseline_image",
    "deletion_insertion",
    "faithfulness_summary",
    "rank_correlation",
]

FILLS = ("blur", "black", "mean")


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Settings of the faithfulness checks (documented in the module docstring)."""

    steps: int = 16
    fill: str = "blur"
    batch_size: int = 32
    max_rank_correlation: float = 0.5


def baseline_image(pixels: torch.Tensor, fill: str = "blur") -> torch.Tensor:
    """The "nothing here" image for (B, 3, S, S) pixels in [0, 1]."""
    if fill == "blur":
        sigma = 5.0 * pixels.shape[-1] / 224
        k = 2 * round(3 * sigma) + 1
        return gaussian_blur(pixels, [k, k], [sigma, sigma])
    if fill == "black":
        return torch.zeros_like(pixels)
    if fill == "mean":
        return pixels.mean(dim=(2, 3), keepdim=True).expand_as(pixels).clone()
    raise ValueError(f"fill {fill!r}: choose one of {', '.join(FILLS)}")


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves (…, steps + 1) sampled at equal steps over [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * (c.shape[-1] - 1))


@torch.inference_mode()
def _class_probs(
    model: nn.Module,
    pixels: torch.Tensor,
    classes: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
) -> torch.Tensor:
    """Probability of ``classes[i]`` for each of the (N, 3, S, S) pixel images in [0, 1]."""
    out = []
    for start in range(0, pixels.shape[0], batch_size):
        x = normalize(pixels[start : start + batch_size], mean, std).contiguous(memory_format=torch.channels_last)
        p = model(x).float().softmax(1)
        out.append(p.gather(1, classes[start : start + batch_size, None])[:, 0])
    return torch.cat(out)


def deletion_insertion(
    model: nn.Module,
    pixels: torch.Tensor,
    heat: torch.Tensor,
    classes: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    config: FaithfulnessConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (B, steps + 1) of the probability of ``classes``.

    Args:
        model: Classifier in eval mode.
        pixels: (B, 3, S, S) images in [0, 1] on the model's device.
        heat: (B, S, S) maps (any scale; only their order counts).
        classes: (B,) class index per image.
        mean, std: The model's input normalization.
        config: Its ``steps`` (from no pixel to all pixels), ``fill`` (the baseline: ``blur``, ``black`` or
            ``mean``) and ``batch_size`` (images per forward pass).
    """
    cfg = config or FaithfulnessConfig()
    steps, fill, batch_size = cfg.steps, cfg.fill, cfg.batch_size
    b, _, h, w = pixels.shape
    base = baseline_image(pixels, fill)
    # rank of every pixel in the map's order (0 = most relevant); stable: ties keep raster order
    order = torch.argsort(-heat.reshape(b, -1).float(), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    rank = rank.view(b, 1, h, w)
    counts = torch.tensor([round(i * h * w / steps) for i in range(steps + 1)], device=pixels.device)
    deletion, insertion = [], []
    for i in range(b):  # one image at a time: 2 (steps + 1) inputs in memory, not B times as many
        top = (rank[i] < counts.view(-1, 1, 1, 1)).to(pixels.dtype)  # (steps+1, 1, H, W): the k most relevant
        inputs = torch.cat([pixels[i] * (1 - top) + base[i] * top, base[i] * (1 - top) + pixels[i] * top])
        probs = _class_probs(model, inputs, classes[i].repeat(inputs.shape[0]), mean, std, batch_size).cpu()
        deletion.append(probs[: steps + 1])
        insertion.append(probs[steps + 1 :])
    return torch.stack(deletion).numpy(), torch.stack(insertion).numpy()


def average_drop_increase(
    model: nn.Module,
    pixels: torch.Tensor,
    heat: torch.Tensor,
    classes: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the drop max(0, y − o) / y (0–1) and whether o > y, for the image masked by its map."""
    scaled = normalize_for_display(heat.float())
    y = _class_probs(model, pixels, classes, mean, std, batch_size)
    o = _class_probs(model, pixels * scaled[:, None].to(pixels.dtype), classes, mean, std, batch_size)
    drop = (F.relu(y - o) / y.clamp_min(1e-12)).cpu().numpy()
    return drop, (o > y).cpu().numpy()


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Spearman's ρ between paired maps (B, H, W), per pair; 0 where either map is constant."""
    a_np = np.asarray(torch.as_tensor(a).float().cpu()).reshape(len(a), -1)
    b_np = np.asarray(torch.as_tensor(b).float().cpu()).reshape(len(b), -1)
    out = np.zeros(len(a_np))
    for i, (u, v) in enumerate(zip(a_np, b_np, strict=True)):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            continue
        out[i] = float(stats.spearmanr(u, v).statistic)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


class FaithfulnessRun:
    """The faithfulness checks of one audit: which images, the randomized model, the random-order baseline.

    Args:
        model: The trained model (eval mode, on ``device``).
        info: Its description (architecture, normalization).
        cfg: Steps, fill and the randomization threshold.
        n: Images in the audited split.
        k: How many of them to measure, evenly spread.
        device: Where the models run.
    """

    def __init__(
        self, model: nn.Module, info: ModelInfo, cfg: FaithfulnessConfig, n: int, k: int, device: torch.device
    ):
        from mieruka.models import build_model

        self.model, self.info, self.cfg = model, info, cfg
        self.chosen = set(np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)).tolist())
        torch.manual_seed(0)  # the same "destroyed" model every run
        self.random_model = (
            build_model(info.arch, len(info.classes), image_size=info.image_size, output_stride=info.output_stride)
            .to(device)
            .eval()
        )
        self.random_model = self.random_model.to(memory_format=torch.channels_last)
        self.baseline: dict[int, tuple[float, float]] = {}

    def measure(
        self,
        store: ImageStore,
        idx: list[int],
        keys: Sequence[int],
        x: torch.Tensor,
        ex: ExplainedBatch,
        method: str,
        layers: tuple[str, ...],
        fusion: str,
    ) -> dict[int, dict[str, Any]]:
        """Faithfulness metrics of the chosen images among ``idx`` (positions in ``store``, explained as ``ex``;
        ``keys`` their indices in the audited split), by index in the split. The first time an image is measured,
        its random-order baseline (deletion, insertion AUC) comes too, under ``random_order``."""
        sel = [j for j, key in enumerate(keys) if key in self.chosen]
        if not sel:
            return {}
        device = x.device
        pixels = store.get([idx[j] for j in sel]).to(device).float() / 255.0
        heat = ex.maps[sel, 0].float()
        # the class each map explains (targets that are not one class, e.g. ng: the predicted class)
        cls = torch.where(ex.class_indices[sel, 0] >= 0, ex.class_indices[sel, 0], ex.probs[sel].argmax(1))
        kw = {"mean": self.info.mean, "std": self.info.std, "batch_size": self.cfg.batch_size}
        norm = {"mean": self.info.mean, "std": self.info.std}
        deletion, insertion = deletion_insertion(self.model, pixels, heat, cls, config=self.cfg, **norm)
        drop, inc = average_drop_increase(self.model, pixels, heat, cls, **kw)  # type: ignore[arg-type]
        rand_layers = layers or None
        rand = explain(
            self.random_model,
            x[sel],
            method=method,
            targets=[TrueClass()],
            layers=rand_layers,
            labels=cls,
            fusion=fusion,
        ).maps[:, 0]
        rho = rank_correlation(heat, rand)
        out: dict[int, dict[str, Any]] = {}
        missing = [n for n, j in enumerate(sel) if keys[j] not in self.baseline]
        if missing:  # the chance baseline: the same curves for a random order of the pixels, once per image
            noise = torch.stack(
                [
                    torch.rand(heat.shape[1:], generator=torch.Generator().manual_seed(int(keys[sel[n]])))
                    for n in missing
                ]
            ).to(device)
            bd, bi = deletion_insertion(self.model, pixels[missing], noise, cls[missing], config=self.cfg, **norm)
            for n, d, i in zip(missing, auc(bd), auc(bi), strict=True):
                self.baseline[int(keys[sel[n]])] = (float(d), float(i))
                out[int(keys[sel[n]])] = {"random_order": (float(d), float(i))}
        for n, j in enumerate(sel):
            out.setdefault(int(keys[j]), {}).update(
                deletion_auc=float(auc(deletion[n])),
                insertion_auc=float(auc(insertion[n])),
                average_drop=float(drop[n]),
                confidence_increase=bool(inc[n]),
                randomization_rho=float(rho[n]),
            )
        return out


@dataclass(frozen=True)
class RandomizationCheck:
    """One method's randomization check: its maps' rank correlation with the randomized model's maps."""

    mean_rank_correlation: float | None
    mean_abs_rank_correlation: float | None
    passed: bool


@dataclass(frozen=True)
class FaithfulnessCheck:
    """The audit-wide faithfulness figures (``summary.json``'s ``faithfulness``).

    Attributes:
        images: Images measured.
        config: The settings used.
        baselines: ``random_order``: the mean deletion and insertion AUC of a random pixel order.
        randomization_check: Per method.
    """

    images: int
    config: FaithfulnessConfig
    baselines: dict[str, dict[str, float | None]]
    randomization_check: dict[str, RandomizationCheck]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaithfulnessCheck:
        return cls(
            images=int(d["images"]),
            config=FaithfulnessConfig(**d["config"]),
            baselines=d["baselines"],
            randomization_check={m: RandomizationCheck(**c) for m, c in d["randomization_check"].items()},
        )


def faithfulness_summary(
    cfg: FaithfulnessConfig, images: int, baselines: Sequence[tuple[float, float]], rhos: dict[str, list[float]]
) -> FaithfulnessCheck:
    """The randomization check per method (``rhos``: each measured image's rank correlation with the randomized
    model's map) and the random-order baseline (``baselines``: deletion, insertion AUC per measured image)."""
    per_method = {}
    for m, values in rhos.items():
        mean_abs = float(np.mean(np.abs(values))) if values else None
        per_method[m] = RandomizationCheck(
            mean_rank_correlation=float(np.mean(values)) if values else None,
            mean_abs_rank_correlation=mean_abs,
            passed=mean_abs is not None and mean_abs < cfg.max_rank_correlation,
        )
    random_order = {"deletion_auc": _mean([b[0] for b in baselines]), "insertion_auc": _mean([b[1] for b in baselines])}
    return FaithfulnessCheck(
        images=images, config=cfg, baselines={"random_order": random_order}, randomization_check=per_method
    )
