"""The CAM family: how each method turns a layer's activations (and gradients) into a map.

Notation, per image: activations A (K channels, h × w positions), the target score y, its gradient
G = ∂y/∂A, Z = h·w. Every gradient method here computes ``L = ReLU(Σ_k W_k ⊙ A_k)`` and differs only in the
weights W (override :meth:`CAMMethod.weights`); a method of another kind (Eigen-CAM, Score-CAM) overrides
:meth:`CAMMethod.layer_maps`, the one place the engine asks for a layer's maps, and says through its class attributes
whether it needs gradients and whether the one-forward-pass fast path applies. Adding a method is one class here,
listed in :data:`METHODS`, plus its test: the engine, the CLI's choices and the docs table read the registry.

On a network whose explained layer feeds only global average pooling and one linear layer, G_k = w_ck / Z at every
position (docs/architecture.md, "Grad-CAM"). Then Grad-CAM, HiResCAM and XGrad-CAM coincide exactly, CAM is Z times
Grad-CAM, and every gradient method can be computed from one forward pass (the fast path of
:mod:`mieruka.explain.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mieruka.explain.scaling import minmax
from mieruka.explain.targets import Target

__all__ = ["METHODS", "CAMMethod", "MapContext"]

_EPS = 1e-7


@dataclass(frozen=True)
class MapContext:
    """What a method may need beyond one layer's activations and gradients.

    Attributes:
        model: The explained model (in eval mode, inside the engine's :func:`~mieruka.explain.engine.preserved`).
        x: (B, 3, H, W) the normalized input, detached.
        class_indices: (B, T) the class each target explains, or -1 where the target is not one class.
        targets: The target callables.
        score_batch_size: Masked inputs per forward pass for methods that score masked copies of the input.
    """

    model: nn.Module
    x: torch.Tensor
    class_indices: torch.Tensor
    targets: Sequence[Target]
    score_batch_size: int = 64


class CAMMethod:
    """Base class: computes ``ReLU(Σ_k W ⊙ A)`` from :meth:`weights`.

    Class attributes document each method and drive the registry, the CLI choices, the docs table and the tests.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    """Whether :meth:`layer_maps` needs ∂target/∂A (the engine computes it only then)."""
    fast_path: ClassVar[bool] = True
    """Whether the maps can come from the closed-form gradient of one forward pass on a GAP + linear head."""
    slow_note: ClassVar[str] = ""
    """Why the fast path does not apply (the docs table prints it)."""

    def __init__(self, score_batch_size: int = 64) -> None:
        self.score_batch_size = score_batch_size
        """Masked inputs per forward pass, for methods that score masked copies of the input (Score-CAM)."""

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MapContext) -> torch.Tensor:
        """Maps (B, T, h, w) of one layer before upsampling; ``grads`` is None unless :attr:`uses_gradients`."""
        if grads is None:
            raise ValueError(f"method {self.name}: needs gradients")
        return self.combine(acts, grads)

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Weights W for each target: ``acts`` (B, K, h, w), ``grads`` (B, T, K, h, w) or (B, T, K, 1, 1).

        Returns (B, T, K, 1, 1) channel weights or (B, T, K, h, w) per-position weights.
        """
        raise NotImplementedError

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Maps (B, T, h, w) before upsampling."""
        w = self.weights(acts, grads)
        if w.shape[-2:] == (1, 1):
            # channel weights: a batched matmul, no (B, T, K, h, w) temporary
            b, t, k = w.shape[:3]
            cam = torch.bmm(w.reshape(b, t, k), acts.flatten(2)).view(b, t, *acts.shape[-2:])  # (B, T, h, w)
        else:
            cam = (w * acts.unsqueeze(1)).sum(2)  # (B, T, h, w)
        return F.relu(cam)


class GradCAM(CAMMethod):
    name = "gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017"
    formula = "W_k = (1/Z) Σ_ij ∂y/∂A_kij ; L = ReLU(Σ_k W_k A_k)"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(3, 4), keepdim=True)  # (B, T, K, 1, 1)


class GradCAMPlusPlus(CAMMethod):
    name = "gradcam++"
    paper = "Chattopadhay et al., Grad-CAM++, WACV 2018"
    formula = (
        "α_kij = G²/(2G² + Σ_ab A_kab·G³) ; W_k = Σ_ij α_kij ReLU(G_kij) ; L = ReLU(Σ_k W_k A_k) "
        "(the closed form for an exponential score, as in the paper's implementation)"
    )
    # pytorch-grad-cam 1.5.7 adds 1e-6 to the denominator of α. Gradients of a logit with respect to a late layer are
    # often ~1e-4, so G² ~ 1e-8 and that constant dominates: its weights become ∝ ReLU(G)·G²/1e-6 instead of the
    # paper's. We divide exactly (α = 0 where G = 0) and test against a hand computation instead of that library.

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_a = acts.sum(dim=(2, 3))[:, None, :, None, None]  # (B, 1, K, 1, 1)
        denom = 2 * g2 + sum_a * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        alpha = alpha * (grads != 0)
        if grads.shape[-2:] == (1, 1):  # a constant gradient: every position contributes the same
            return (alpha * F.relu(grads)) * (acts.shape[2] * acts.shape[3])
        return (alpha * F.relu(grads)).sum(dim=(3, 4), keepdim=True)


class XGradCAM(CAMMethod):
    name = "xgradcam"
    paper = "Fu et al., Axiom-based Grad-CAM (XGrad-CAM), BMVC 2020"
    formula = "W_k = Σ_ij (A_kij / Σ_ab A_kab) ∂y/∂A_kij ; L = ReLU(Σ_k W_k A_k)"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sum_a = acts.sum(dim=(2, 3))[:, None, :, None, None]  # (B, 1, K, 1, 1)
        ga = (grads * acts.unsqueeze(1)).sum(dim=(3, 4), keepdim=True)  # (B, T, K, 1, 1)
        return ga / (sum_a + _EPS)


class HiResCAM(CAMMethod):
    name = "hirescam"
    paper = "Draelos & Carin, HiResCAM, arXiv:2011.08891 (2020)"
    formula = "L = ReLU(Σ_k ∂y/∂A_k ⊙ A_k)  (element-wise, no spatial averaging of the gradient)"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads


class LayerCAM(CAMMethod):
    name = "layercam"
    paper = "Jiang et al., LayerCAM, IEEE TIP 30 (2021)"
    formula = (
        "L = ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k); several layers: the mean of the per-layer maps, each min–max scaled "
        "and resized to the input"
    )

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return F.relu(grads)


class CAM(CAMMethod):
    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    formula = "L = ReLU(Σ_k w_ck A_k), w the final linear layer (= Z · Grad-CAM on a GAP + linear head)"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        # On the head CAM requires, ∂y/∂A_kij = w_ck / Z everywhere, so w_ck = Z · mean(G).
        z = acts.shape[2] * acts.shape[3]
        return grads.mean(dim=(3, 4), keepdim=True) * z


class EigenCAM(CAMMethod):
    name = "eigencam"
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020"
    formula = (
        "L = ReLU(first principal component of the (Z × K) centered activations, projected), oriented to agree "
        "with the mean activation; class-agnostic, no gradients"
    )
    uses_gradients = False

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MapContext) -> torch.Tensor:
        return self.project(acts)[:, None].expand(-1, ctx.class_indices.shape[1], -1, -1)

    def project(self, acts: torch.Tensor) -> torch.Tensor:
        """Maps (B, h, w) from activations alone."""
        b, _, h, w = acts.shape
        x = acts.flatten(2).transpose(1, 2).double()  # (B, Z, K)
        x = x - x.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (B, min(Z,K), K)
        proj = torch.bmm(x, vh[:, :1, :].transpose(1, 2))[..., 0]  # (B, Z)
        # An SVD's sign is arbitrary; orient the component so that it correlates with the mean activation.
        mean_act = acts.flatten(2).mean(1).double()  # (B, Z)
        sign = torch.sign(((proj - proj.mean(1, keepdim=True)) * (mean_act - mean_act.mean(1, keepdim=True))).sum(1))
        proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        return F.relu(proj).view(b, h, w).to(acts.dtype)


class ScoreCAM(CAMMethod):
    name = "scorecam"
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020"
    formula = (
        "M_k = upsample(A_k) min–max scaled to [0, 1]; s_k = y(x ⊙ M_k); W = softmax_k(s) ; L = ReLU(Σ_k W_k A_k) "
        "(one forward pass per channel: slow, opt-in)"
    )
    uses_gradients = False
    fast_path = False
    slow_note = "forward passes per channel"

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MapContext) -> torch.Tensor:
        weights = []  # (B, T, K): each image's masked copies are scored on that image's target classes
        with torch.no_grad():
            for i in range(ctx.x.shape[0]):

                def score(inp: torch.Tensor, i: int = i) -> torch.Tensor:
                    lg = ctx.model(inp)  # (n, C)
                    cols = [
                        lg[:, int(c)] if int(c) >= 0 else t(lg, None)
                        for c, t in zip(ctx.class_indices[i], ctx.targets, strict=True)
                    ]
                    return torch.stack(cols, 1)  # (n, T)

                weights.append(self.score_weights(ctx.x[i : i + 1], acts[i : i + 1], score, ctx.score_batch_size)[0])
        return F.relu(torch.einsum("btk,bkhw->bthw", torch.stack(weights), acts))

    def score_weights(
        self, x: torch.Tensor, acts: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 64
    ) -> torch.Tensor:
        """Channel weights (B, T, K) from masked forward passes; ``score`` maps inputs (N, 3, H, W) → (N, T)."""
        b, k = acts.shape[:2]
        # Masks are upsampled with corner-aligned bilinear interpolation, as the reference implementation
        # (pytorch-grad-cam) does, so that Score-CAM maps agree with it; the final map is resized like every other.
        up = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)  # (B, K, H, W)
        masks = minmax(up)
        out = []
        for i in range(b):
            scores = []
            for start in range(0, k, batch_size):
                m = masks[i, start : start + batch_size, None]  # (n, 1, H, W)
                scores.append(score(x[i : i + 1] * m))  # (n, T)
            out.append(torch.cat(scores).T.softmax(dim=1))  # (T, K)
        return torch.stack(out)  # (B, T, K)


METHODS: dict[str, type[CAMMethod]] = {
    m.name: m for m in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, ScoreCAM, EigenCAM, CAM)
}
"""Method name → class. The CLI's ``--method`` choices, the docs table and the tests all read this dict."""
