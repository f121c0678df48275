"""Second-order gradients of grouped (depthwise) convolutions without a loop over the groups.

``--guide-fine`` differentiates the LayerCAM maps, which are themselves gradients, so every convolution after the
guided stages is differentiated twice. PyTorch's double backward of a convolution with ``groups > 1`` runs one
convolution per group for the weight's term (``aten::_convolution_double_backward``): on EfficientNet-Lite0, about
250 small convolutions for each depthwise layer, 2.0 s of a 4.7 s guided backward pass on a CPU (docs/
benchmarks-history.md#guide). Under this module a guided step takes 0.72× as long.

:class:`GroupedConvDoubleBackward` is a torch-function mode that routes ``conv2d`` calls with ``groups > 1`` through
autograd functions whose backward passes are themselves differentiable, each by one call of PyTorch's own grouped
kernels (``aten::convolution_backward``). With

    gI = ∂⟨gO, conv(x, w)⟩/∂x   and   gW = ∂⟨gO, conv(x, w)⟩/∂w,

both bilinear, the second-order terms are: for gI, ∂/∂gO = conv(ggI, w) and ∂/∂w = the weight gradient of a
convolution of ggI with output gradient gO; for gW, ∂/∂gO = conv(x, ggW) and ∂/∂x = the input gradient of a
convolution with weight ggW. The first and second derivatives are the same functions as PyTorch's (the tests compare
them in float64). Calls under autocast, with string padding, or without gradients keep PyTorch's own path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["GroupedConvDoubleBackward"]

Conf = tuple[list[int], list[int], list[int], int]  # stride, padding, dilation, groups


def _backward(grad_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, conf: Conf, mask: list[bool]) -> Any:
    stride, padding, dilation, groups = conf
    return torch.ops.aten.convolution_backward(
        grad_out, x, w, None, stride, padding, dilation, False, [0, 0], groups, mask
    )


class _ConvGrad(torch.autograd.Function):
    """One partial derivative of ⟨gO, conv(x, w)⟩: with respect to x (``wrt=0``, a function of gO and w) or to w
    (``wrt=1``, a function of gO and x). Both are bilinear, so each of their own derivatives is one kernel call."""

    @staticmethod
    def forward(
        ctx: Any, grad_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, conf: Conf, wrt: int
    ) -> torch.Tensor:
        ctx.save_for_backward(grad_out, x, w)
        ctx.conf, ctx.wrt = conf, wrt
        return _backward(grad_out, x, w, conf, [wrt == 0, wrt == 1, False])[wrt]

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_out, x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need = ctx.needs_input_grad
        if ctx.wrt == 0:  # gI: ∂/∂gO = conv(gg, w); ∂/∂w = the weight gradient of a convolution of gg, against gO
            d_out = F.conv2d(gg, w, None, stride, padding, dilation, groups) if need[0] else None
            d_w = _backward(grad_out, gg, w, ctx.conf, [False, True, False])[1] if need[2] else None
            return d_out, None, d_w, None, None
        # gW: ∂/∂gO = conv(x, gg); ∂/∂x = the input gradient of a convolution with weight gg, against gO
        d_out = F.conv2d(x, gg, None, stride, padding, dilation, groups) if need[0] else None
        d_x = _backward(grad_out, x, gg, ctx.conf, [True, False, False])[0] if need[1] else None
        return d_out, d_x, None, None, None


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, conf: Conf) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.conf = conf
        stride, padding, dilation, groups = conf
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_x = _ConvGrad.apply(grad_out, x, w, ctx.conf, 0) if need[0] else None
        grad_w = _ConvGrad.apply(grad_out, x, w, ctx.conf, 1) if need[1] else None
        grad_b = grad_out.sum((0, 2, 3)) if need[2] else None
        return grad_x, grad_w, grad_b, None


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


class GroupedConvDoubleBackward(TorchFunctionMode):
    """Within this mode, ``conv2d`` with ``groups > 1`` (with gradients on, no autocast, numeric padding) has a
    double backward of a few grouped kernel calls instead of one convolution per group."""

    _ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            call = {**dict(zip(self._ARGS, args, strict=False)), **kwargs}
            x, padding, groups = call["input"], call.get("padding", 0), call.get("groups", 1)
            if (
                groups > 1
                and not isinstance(padding, str)
                and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x.device.type)
            ):
                conf = (_pair(call.get("stride", 1)), _pair(padding), _pair(call.get("dilation", 1)), int(groups))
                return _Conv.apply(x, call["weight"], call.get("bias"), conf)
        return func(*args, **kwargs)
