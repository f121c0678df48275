"""The grouped convolutions' double backward used under ``--guide-fine``: the same derivatives as PyTorch's, with a
few kernel calls instead of one convolution per group."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mieruka.train.frozen import freeze_stages
from mieruka.train.grouped_conv import GroupedConvDoubleBackward
from mieruka.train.guide import FineGuide


def _second_order(use_mode: bool, stride: int, bias: bool) -> tuple[torch.Tensor, ...]:
    """A depthwise convolution between a pointwise one and a train-mode BatchNorm; the loss holds the squared
    gradient of the output with respect to the depthwise layer's input, as the fine guide's does."""
    g = torch.Generator().manual_seed(stride)
    x = torch.randn(3, 4, 11, 11, dtype=torch.float64, generator=g, requires_grad=True)
    pw = torch.randn(8, 4, 1, 1, dtype=torch.float64, generator=g, requires_grad=True)
    dw = torch.randn(8, 1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    bn = nn.BatchNorm2d(8).double().train()
    with GroupedConvDoubleBackward() if use_mode else torch.enable_grad():
        a = F.conv2d(x, pw)
        h = F.conv2d(a, dw, b, stride, 1, 1, 8)
        if use_mode:
            assert type(h.grad_fn).__name__ == "_ConvBackward"  # routed through the mode
        out = F.hardtanh(bn(h), 0, 6).pow(2).sum()
    (grad_a,) = torch.autograd.grad(out, a, create_graph=True)
    loss = out + (grad_a * a).relu().sum()  # a LayerCAM-like map of the gradient, differentiated again
    params = [x, pw, dw, *([b] if b is not None else []), bn.weight, bn.bias]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize(("stride", "bias"), [(1, False), (2, True)])
def test_first_and_second_derivatives_equal_pytorchs(stride: int, bias: bool) -> None:
    ours, theirs = _second_order(True, stride, bias), _second_order(False, stride, bias)
    assert all(float(t.abs().max()) > 1e-3 for t in theirs[:3])  # the input and both convolutions' weights
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * max(1.0, float(want.abs().max())))


def test_other_calls_keep_pytorchs_own_path() -> None:
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with GroupedConvDoubleBackward():
        assert type(F.conv2d(x, torch.randn(4, 4, 3, 3)).grad_fn).__name__ == "ConvolutionBackward0"  # groups 1
        same = F.conv2d(x, torch.randn(4, 1, 3, 3), padding="same", groups=4)
        assert type(same.grad_fn).__name__ == "ConvolutionBackward0"  # string padding
        with torch.no_grad():
            assert F.conv2d(x, torch.randn(4, 1, 3, 3), groups=4).grad_fn is None


def test_the_fine_guides_weight_gradients_are_unchanged_on_efficientnet_lite() -> None:
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)
    freeze_stages(model, 3)
    fine = FineGuide(model)  # it probes the model in float32
    model.double().train()
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1])
    on = torch.tensor([True, False, True, True])
    mask = torch.zeros(3, 1, 64, 64, dtype=torch.float64)
    mask[:, :, 8:24, 16:40] = 1.0
    seen: list[str] = []
    model.get_submodule("blocks.4.0.conv_dw").register_forward_hook(
        lambda _m, _i, out: seen.append(type(out.grad_fn).__name__)
    )
    grads = []
    for use_mode in (False, True):
        model.zero_grad(set_to_none=True)
        with GroupedConvDoubleBackward() if use_mode else torch.enable_grad():
            logits = model(x)
        (F.cross_entropy(logits, y) + fine.loss(logits, y, on, mask)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert seen == ["ConvolutionBackward0", "_ConvBackward"]  # a depthwise layer, without and with the mode
    assert grads[0].keys() == grads[1].keys() and "blocks.4.0.conv_dw.weight" in grads[0]
    for name, want in grads[0].items():
        torch.testing.assert_close(grads[1][name], want, rtol=1e-9, atol=1e-9 * float(want.abs().max()) + 1e-30)
