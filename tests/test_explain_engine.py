from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mieruka.explain.engine import explain, fast_path_head, multiscale_layers
from mieruka.explain.methods import METHODS, EigenCAM
from mieruka.explain.targets import ClassTarget, NGScore, TrueClass
from mieruka.models import build_model

ARCHS = ["tf_efficientnet_lite0", "resnet18"]
FAST_METHODS = [n for n, c in METHODS.items() if n != "scorecam"]


def _model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, 5)
    torch.nn.init.normal_(model.get_classifier().weight, std=0.3)  # a random head with visible class differences
    return model.eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", FAST_METHODS)
def test_fast_path_equals_general_path(arch: str, method: str, batch: torch.Tensor) -> None:
    model = _model(arch)
    labels = torch.tensor([0, 3, 4])
    for targets in ("all", [NGScore((0, 1), (2, 3, 4))], [TrueClass()]):
        fast = explain(model, batch, method=method, targets=targets, labels=labels)
        slow = explain(model, batch, method=method, targets=targets, labels=labels, allow_fast_path=False)
        assert fast.fast_path and not slow.fast_path
        scale = slow.maps.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        torch.testing.assert_close(fast.maps / scale, slow.maps / scale, rtol=0, atol=1e-5)
        torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-5)
        assert slow.maps.amax() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_matches_the_design_formula(arch: str, batch: torch.Tensor) -> None:
    """design.md: a_k = mean_ij ∂y^c/∂A_kij ; L = ReLU(Σ_k a_k A_k), resized to the input."""
    model = _model(arch)
    feats = model.forward_features(batch).detach().requires_grad_(True)  # (B, K, h, w)
    logits = model.forward_head(feats)
    c = 2
    (grads,) = torch.autograd.grad(logits[:, c].sum(), feats)
    weights = grads.mean(dim=(2, 3))  # (B, K)
    expected = F.relu(torch.einsum("bk,bkhw->bhw", weights, feats.detach()))
    expected = F.interpolate(expected[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    for fast in (True, False):
        got = explain(model, batch, method="gradcam", targets=[ClassTarget(c)], allow_fast_path=fast)
        torch.testing.assert_close(got.maps, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    # …and with one closed-form weight per class: a_k = w_ck / Z
    z = feats.shape[2] * feats.shape[3]
    w = model.get_classifier().weight[c] / z
    closed = F.relu(torch.einsum("k,bkhw->bhw", w, feats.detach()))
    torch.testing.assert_close(
        F.interpolate(closed[:, None], size=(64, 64), mode="bilinear", align_corners=False),
        expected,
        rtol=1e-5,
        atol=1e-6 * float(expected.max()),
    )


def test_gradcam_hirescam_xgradcam_cam_coincide_on_a_gap_linear_head(batch: torch.Tensor) -> None:
    model = _model("resnet18")
    maps = {m: explain(model, batch, method=m, targets="all").maps for m in ("gradcam", "hirescam", "xgradcam", "cam")}
    torch.testing.assert_close(maps["hirescam"], maps["gradcam"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps["xgradcam"], maps["gradcam"], rtol=1e-4, atol=1e-7)
    z = model.forward_features(batch).shape[-1] ** 2
    torch.testing.assert_close(maps["cam"], maps["gradcam"] * z, rtol=1e-5, atol=1e-6)


def test_caller_model_is_left_exactly_as_found(batch: torch.Tensor) -> None:
    model = _model("tf_efficientnet_lite0").train()
    model.conv_stem.weight.requires_grad_(False)
    model.get_classifier().weight.grad = torch.ones_like(model.get_classifier().weight)
    before_grad = model.get_classifier().weight.grad.clone()
    x = batch.clone()
    for fast in (True, False):
        explain(model, x, method="gradcam", targets="all", allow_fast_path=fast)
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv_stem.weight.requires_grad and model.blocks[0][0].conv_dw.weight.requires_grad
    torch.testing.assert_close(model.get_classifier().weight.grad, before_grad)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("classifier"))
    torch.testing.assert_close(x, batch)  # input not mutated
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_and_mode_restored_after_an_exception(batch: torch.Tensor) -> None:
    model = _model("resnet18").train()

    def broken_target(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        explain(model, batch, targets=[broken_target], allow_fast_path=False)
    assert model.training and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="--layer nonexistent"):
        explain(model, batch, layers=["nonexistent"])
    assert model.training


def test_frozen_model_under_inference_mode_still_explains(batch: torch.Tensor) -> None:
    model = _model("resnet18")
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        x = batch.clone()  # an inference tensor
        ex = explain(model, x, method="gradcam", layers=["layer3"])  # not the feature layer: general path
    assert not ex.fast_path and ex.maps.amax() > 0
    assert all(not p.requires_grad for p in model.parameters())


def test_layercam_fuses_layers_as_mean_of_scaled_maps(batch: torch.Tensor) -> None:
    model = _model("resnet18")
    fused = explain(model, batch, method="layercam", layers=["layer3", "layer4"], targets=[ClassTarget(1)])
    # by hand: per layer ReLU(Σ_k ReLU(G) A), min–max scaled at its own resolution, resized, then averaged
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
        for n in ("layer3", "layer4")
    ]
    logits = model(batch)
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(logits[:, 1].sum(), [acts["layer3"], acts["layer4"]])
    expected = []
    for a, g in zip((acts["layer3"], acts["layer4"]), grads, strict=True):
        m = F.relu((F.relu(g) * a.detach()).sum(1, keepdim=True))
        lo, hi = m.amin(dim=(2, 3), keepdim=True), m.amax(dim=(2, 3), keepdim=True)
        expected.append(F.interpolate((m - lo) / (hi - lo), size=(64, 64), mode="bilinear", align_corners=False))
    torch.testing.assert_close(fused.maps, (expected[0] + expected[1]) / 2, rtol=1e-5, atol=1e-6)
    assert fused.layers == ("layer3", "layer4")
    assert all(not m._forward_hooks for m in model.modules())


def test_product_fusion_multiplies_the_scaled_layer_maps(batch: torch.Tensor) -> None:
    model = _model("resnet18")
    layers = multiscale_layers(model)
    assert layers == ("layer2", "layer3", "layer4")
    mean = explain(model, batch, method="layercam", layers=layers, targets=[ClassTarget(1)])
    prod = explain(model, batch, method="layercam", layers=layers, targets=[ClassTarget(1)], fusion="product")
    singles = [
        explain(model, batch, method="layercam", layers=layers[i : i + 2], targets=[ClassTarget(1)], fusion="product")
        for i in (0,)
    ]
    assert prod.maps.max() <= 1 and prod.maps.min() >= 0 and singles[0].maps.shape == prod.maps.shape
    # product ≤ every factor ≤ 1, so it never exceeds the mean of the same factors (AM–GM and more)
    assert bool((prod.maps <= mean.maps + 1e-6).all())
    with pytest.raises(ValueError, match="fusion 'max'"):
        explain(model, batch, layers=layers, fusion="max")


def test_scorecam_matches_a_hand_computation() -> None:
    model = _model("resnet18")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ex = explain(model, x, method=METHODS["scorecam"](score_batch_size=128), targets=[ClassTarget(2)])
    with torch.no_grad():
        acts = model.forward_features(x)  # (1, K, 1, 1) at 32 px
        up = F.interpolate(acts, size=(32, 32), mode="bilinear", align_corners=True)[0]
        scores = []
        for k in range(acts.shape[1]):
            m = up[k]
            m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
            scores.append(model(x * m)[0, 2])
        w = torch.stack(scores).softmax(0)
        expected = F.relu((w[:, None, None] * acts[0]).sum(0))
        expected = F.interpolate(expected[None, None], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ex.maps, expected, rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_matches_a_hand_computation(batch: torch.Tensor) -> None:
    """Eq. 19 of Chattopadhay et al. with an exact division (see the note in methods.GradCAMPlusPlus)."""
    model = _model("resnet18")
    feats = model.forward_features(batch).detach().requires_grad_(True)  # (B, K, h, w)
    (g,) = torch.autograd.grad(model.forward_head(feats)[:, 1].sum(), feats)
    a = feats.detach()
    denom = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where(g != 0, g**2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    w = (alpha * F.relu(g)).sum(dim=(2, 3))  # (B, K)
    expected = F.relu(torch.einsum("bk,bkhw->bhw", w, a))[:, None]
    expected = F.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)
    for fast in (True, False):
        got = explain(model, batch, method="gradcam++", targets=[ClassTarget(1)], allow_fast_path=fast).maps
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_eigencam_is_the_oriented_first_principal_component(batch: torch.Tensor) -> None:
    model = _model("resnet18")
    acts = model.forward_features(batch).detach()
    maps = EigenCAM().project(acts)  # (B, h, w)
    for i in range(acts.shape[0]):
        a = acts[i].flatten(1).T.double()  # (Z, K)
        a = a - a.mean(0)
        v = torch.linalg.svd(a, full_matrices=False).Vh[0]
        proj = a @ v
        corr = torch.corrcoef(torch.stack([proj, acts[i].mean(0).flatten().double()]))[0, 1]
        expected = F.relu(proj if corr >= 0 else -proj).view(acts.shape[2:]).float()
        torch.testing.assert_close(maps[i], expected, rtol=1e-4, atol=1e-5)


def test_fast_path_is_detected_not_assumed() -> None:
    model = _model("resnet18")
    assert fast_path_head(model) is model.fc
    convnext = build_model("convnext_atto", 3)  # its head has a LayerNorm before the linear layer
    assert fast_path_head(convnext) is None
    ex = explain(convnext.eval(), torch.randn(1, 3, 64, 64), method="gradcam")
    assert not ex.fast_path


def test_every_method_runs_and_is_registered_once() -> None:
    assert list(METHODS) == ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam", "cam"]
    for name, cls in METHODS.items():
        assert cls.name == name and cls.paper and cls.formula


def test_closed_form_is_checked_once_per_feature_shape(batch: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads a number back from the device, so it runs once per model and feature shape, not per batch;
    a model whose head breaks the closed form is still caught, and a new shape is checked again."""
    import mieruka.explain.engine as engine

    calls: list[tuple[int, ...]] = []
    real = engine.closed_form_holds

    def counted(feats: torch.Tensor, logits: torch.Tensor, head: torch.nn.Linear) -> bool:
        calls.append(tuple(feats.shape))
        return real(feats, logits, head)

    monkeypatch.setattr(engine, "closed_form_holds", counted)
    model = _model("resnet18")
    for _ in range(3):
        assert explain(model, batch).fast_path
    explain(model, batch[:1])  # another batch size: the same feature shape per image
    assert len(calls) == 1
    explain(model, torch.randn(2, 3, 96, 96))  # another input size: checked again
    assert len(calls) == 2

    class Scaled(torch.nn.Module):  # a head that is not W · mean(A) + b: the check must say no
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2.0

    liar = _model("resnet18", seed=1)
    liar.forward_head = lambda f, pre_logits=False: Scaled(liar.fc)(liar.global_pool(f))  # type: ignore[method-assign]
    first, second = explain(liar, batch), explain(liar, batch)
    assert not first.fast_path and not second.fast_path


def test_class_targets_use_the_head_rows_directly(batch: torch.Tensor) -> None:
    """For class targets the fast path takes G = W[c] / Z; a target that is not one class goes through the logits'
    gradient; both equal the general path."""
    model = _model("tf_efficientnet_lite0")
    for targets in ([ClassTarget(2)], [NGScore((0, 1), (2, 3, 4))]):
        fast = explain(model, batch, targets=targets)
        slow = explain(model, batch, targets=targets, allow_fast_path=False)
        assert fast.fast_path and not slow.fast_path
        torch.testing.assert_close(fast.maps, slow.maps, rtol=1e-4, atol=1e-6)
