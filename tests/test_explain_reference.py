"""Agreement with the reference implementation, pytorch-grad-cam 1.5.7, after the same normalization.

pytorch-grad-cam returns per-image min–max scaled maps resized to the input; bilinear resizing commutes with that
affine scaling, so the reference equals min–max(our map). Where the reference differs on purpose it is said next to
the test: Grad-CAM++ (an epsilon that dominates small gradients; tested against a hand computation in
test_explain_engine) and Eigen-CAM (an unoriented principal component).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mieruka.explain.engine import explain
from mieruka.explain.methods import METHODS
from mieruka.explain.targets import ClassTarget
from mieruka.models import build_model

cam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

REFERENCE = {
    "gradcam": cam_lib.GradCAM,
    "xgradcam": cam_lib.XGradCAM,
    "hirescam": cam_lib.HiResCAM,
    "layercam": cam_lib.LayerCAM,
    "scorecam": cam_lib.ScoreCAM,
}
LAYER = {"tf_efficientnet_lite0": "bn2", "resnet18": "layer4"}


def _minmax(maps: torch.Tensor) -> np.ndarray:
    flat = maps.flatten(-2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo + 1e-7)).view_as(maps).numpy()


def _setup(arch: str, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(arch, 4).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.3)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    return model, x


@pytest.mark.parametrize("arch", list(LAYER))
@pytest.mark.parametrize("method", list(REFERENCE))
def test_agrees_with_pytorch_grad_cam(arch: str, method: str) -> None:
    size = 64 if method == "scorecam" else 96  # Score-CAM runs one forward pass per channel
    model, x = _setup(arch, size)
    # Score-CAM: one image, one given class (the predicted class's path is the same arithmetic as the other methods')
    x, classes = (x[:1], (2,)) if method == "scorecam" else (x, (None, 2))
    layer = dict(model.named_modules())[LAYER[arch]]
    reference = REFERENCE[method](model=model, target_layers=[layer])
    for c in classes:
        ours = explain(
            model, x, method=METHODS[method](score_batch_size=16), targets=[ClassTarget(c)] if c is not None else ()
        )  # the reference batches 16 masked inputs: same arithmetic
        theirs = reference(input_tensor=x, targets=None if c is None else [ClassifierOutputTarget(c)] * len(x))
        # Score-CAM on EfficientNet-Lite0 (1280 channels, a 2 × 2 map at 64 px) differs by up to 6.6e-4 although the
        # channel weights agree to 1e-9: the map is a softmax-weighted sum over 1280 channels whose float32 rounding
        # the min–max scaling of a 2 × 2 map magnifies. Every other case agrees within 1e-4.
        atol = 1e-3 if (method, arch) == ("scorecam", "tf_efficientnet_lite0") else 1e-4
        np.testing.assert_allclose(_minmax(ours.maps[:, 0]), theirs, atol=atol)


@pytest.mark.parametrize("arch", list(LAYER))
def test_layercam_fused_layers_agree(arch: str) -> None:
    model, x = _setup(arch, 96)
    names = ["blocks.5", "bn2"] if arch.startswith("tf_") else ["layer3", "layer4"]
    modules = dict(model.named_modules())
    reference = cam_lib.LayerCAM(model=model, target_layers=[modules[n] for n in names])
    ours = explain(model, x, method="layercam", layers=names, targets=[ClassTarget(1)])
    theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(x))
    np.testing.assert_allclose(_minmax(ours.maps[:, 0]), theirs, atol=1e-4)


@pytest.mark.parametrize("arch", list(LAYER))
def test_eigencam_agrees_up_to_the_orientation_of_the_component(arch: str) -> None:
    """The reference keeps whatever sign NumPy's SVD returns; we orient the component along the mean activation.
    Both are the same projection: ours is the reference's when their signs agree, its negation otherwise."""
    model, x = _setup(arch, 96)
    layer = dict(model.named_modules())[LAYER[arch]]
    theirs = cam_lib.EigenCAM(model=model, target_layers=[layer])(input_tensor=x, targets=None)
    ours = _minmax(explain(model, x, method="eigencam").maps[:, 0])
    with torch.no_grad():
        acts = model.forward_features(x).numpy()
    proj = torch.from_numpy(get_2d_projection(acts))  # (B, h, w), the reference's unrectified projection

    def rendered(p: torch.Tensor) -> np.ndarray:
        up = torch.nn.functional.interpolate(p.clamp_min(0)[None, None], size=(96, 96), mode="bilinear")
        return _minmax(up[0, 0])

    for i in range(len(x)):
        corr = np.corrcoef(proj[i].ravel(), acts[i].mean(0).ravel())[0, 1]
        np.testing.assert_allclose(theirs[i], rendered(proj[i]), atol=1e-4)  # reference: the sign SVD gave
        np.testing.assert_allclose(ours[i], rendered(proj[i] if corr >= 0 else -proj[i]), atol=1e-4)  # ours: oriented
