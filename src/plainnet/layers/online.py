"""RepVGG's online training form: the three branches merged into one 3x3 kernel on every step.

OREPA-style linear scaling (Hu et al., "Online Convolutional Re-parameterization", CVPR 2022,
arXiv:2204.00826) applied to the RepVGG block: each branch's BatchNorm becomes a learnable per-channel
scale, which keeps the three branches linear, so their sum *is* one 3x3 convolution with the kernel
``s3*W3 + pad(s1*W1) + si*I``; one BatchNorm follows it. Training then runs one convolution per block,
as the fused network does, instead of two convolutions, three BatchNorms and two sums.

The merged convolution is its own autograd function: it keeps only its input for the backward pass and
rebuilds the kernel there (a weight-sized sum, cheap), instead of storing a kernel per block.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .blocks import ActLayer, NormLayer, Reparameterizable, RepVGGBlock, SqueezeExcite, deploy_conv
from .fusion import fuse_conv_bn, identity_kernel, pad_kernel_to

__all__ = ["OnlineRepVGGBlock", "merged_kernel"]


def merged_kernel(w3: torch.Tensor, w1: torch.Tensor, s3: torch.Tensor, s1: torch.Tensor,
                  si: torch.Tensor | None, eye: torch.Tensor | None) -> torch.Tensor:
    """``s3*W3 + pad(s1*W1) + si*I``: the one 3x3 kernel equal to the three scaled branches."""
    kernel = w3 * s3.view(-1, 1, 1, 1) + pad_kernel_to(w1 * s1.view(-1, 1, 1, 1), 3)
    if si is not None:
        kernel = kernel + eye.to(w3.dtype) * si.view(-1, 1, 1, 1)
    return kernel


#: Devices with an autocast mode (others: meta tensors when a model is summarized, run as they are).
AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def _no_autocast(device: str):
    return torch.autocast(device, enabled=False) if device in AUTOCAST_DEVICES else contextlib.nullcontext()


def _like(kernel: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    kernel = kernel.to(dtype)
    return kernel.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) else kernel


class _MergedConv(torch.autograd.Function):
    """``conv3x3(x, merged_kernel(...))`` that saves only ``x`` (and the parameters) for backward."""

    @staticmethod
    def forward(ctx, x, w3, w1, s3, s1, si, eye, stride: int, groups: int):
        device = x.device.type
        autocast = device in AUTOCAST_DEVICES and torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
        xc = x.to(dtype)
        with _no_autocast(device):
            kernel = _like(merged_kernel(w3, w1, s3, s1, si, eye), xc, dtype)
            y = torch.ops.aten.convolution(xc, kernel, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], groups)
        ctx.save_for_backward(xc, w3, w1, s3, s1, si, eye)
        ctx.stride, ctx.groups, ctx.x_dtype = stride, groups, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        xc, w3, w1, s3, s1, si, eye = ctx.saved_tensors
        with torch.no_grad(), _no_autocast(xc.device.type):
            kernel = _like(merged_kernel(w3, w1, s3, s1, si, eye), xc, xc.dtype)
            grad_x, grad_k, _ = torch.ops.aten.convolution_backward(
                grad_y.to(xc.dtype), xc, kernel, None, [ctx.stride] * 2, [1, 1], [1, 1], False, [0, 0],
                ctx.groups, [ctx.needs_input_grad[0], True, False])
            grad_k = grad_k.to(w3.dtype)
            centre = grad_k[:, :, 1:2, 1:2]
            grads = [grad_x.to(ctx.x_dtype) if grad_x is not None else None,
                     grad_k * s3.view(-1, 1, 1, 1), centre * s1.view(-1, 1, 1, 1),
                     (grad_k * w3).sum((1, 2, 3)), (centre * w1).sum((1, 2, 3)),
                     (grad_k * eye.to(w3.dtype)).sum((1, 2, 3)) if si is not None else None]
        return (*grads, None, None, None)


class OnlineRepVGGBlock(Reparameterizable):
    """RepVGG block, online training form: ``act(se(BN(conv3x3(x, s3*W3 + pad(s1*W1) + si*I))))``.

    Same constructor as :class:`~plainnet.layers.RepVGGBlock`; the identity branch (``scale_identity``)
    exists only when ``in_chs == out_chs`` and ``stride == 1``. :meth:`reparameterize` folds the BN into
    the merged kernel and leaves the same ``rbr_reparam`` conv as a fused standard block.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        groups: int = 1,
        *,
        use_se: bool = False,
        se_ratio: int = 16,
        deploy: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride, self.groups = in_chs, out_chs, stride, groups
        self.deployed = deploy
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_chs, out_chs, 3, stride, 1, groups=groups, bias=True)
        else:
            # The kernels start as nn.Conv2d's (as in the standard block): small beside the identity
            # branch, which dominates the first steps where there is one. Unit-gain kernels instead
            # trained much slower (RepVGG-A0, digits, 6 epochs, seed 0: 62% against 94%).
            self.weight_3x3 = nn.Parameter(torch.empty(out_chs, in_chs // groups, 3, 3))
            self.weight_1x1 = nn.Parameter(torch.empty(out_chs, in_chs // groups, 1, 1))
            for w in (self.weight_3x3, self.weight_1x1):
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's initialization
            self.scale_3x3 = nn.Parameter(torch.ones(out_chs))
            self.scale_1x1 = nn.Parameter(torch.ones(out_chs))
            has_identity = in_chs == out_chs and stride == 1
            self.scale_identity = nn.Parameter(torch.ones(out_chs)) if has_identity else None
            # the identity branch's fixed kernel (not saved: it is always the same)
            self.register_buffer("identity", identity_kernel(out_chs, groups, 3) if has_identity else None,
                                 persistent=False)
            self.bn = norm_layer(out_chs)
        self.se = SqueezeExcite(out_chs, out_chs // se_ratio) if use_se else nn.Identity()
        self.nonlinearity = act_layer()

    def merged_kernel(self) -> torch.Tensor:
        """The one 3x3 kernel of the three branches (before the BN)."""
        return merged_kernel(self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1,
                             self.scale_identity, self.identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            y = self.rbr_reparam(x)
        else:
            y = self.bn(_MergedConv.apply(x, self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1,
                                          self.scale_identity, self.identity, self.stride, self.groups))
        return self.nonlinearity(self.se(y))

    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the 3x3 conv equal to this block before SE and activation."""
        if self.deployed:
            return self.rbr_reparam.weight, self.rbr_reparam.bias
        return fuse_conv_bn(self.merged_kernel(), None, self.bn, out_dtype=self.weight_3x3.dtype)

    @torch.no_grad()
    def to_standard(self) -> RepVGGBlock:
        """The standard three-branch block computing the same function in eval mode: each branch's BN
        holds its scale times this block's BN scale (the BN's shift on the 3x3 branch), with neutral
        running statistics. Tools written for the standard form (structured pruning) take it; training
        it on updates its branch BNs as the standard form does."""
        if self.deployed:
            raise ValueError("a fused block has no training form to convert")
        bn = self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * gain
        block = RepVGGBlock(self.in_chs, self.out_chs, self.stride, self.groups, use_se=False,
                            act_layer=type(self.nonlinearity)).to(self.weight_3x3)
        block.se, block.nonlinearity = self.se, self.nonlinearity
        branches = [(block.rbr_dense.conv.weight, block.rbr_dense.bn, self.weight_3x3, self.scale_3x3, shift),
                    (block.rbr_1x1.conv.weight, block.rbr_1x1.bn, self.weight_1x1, self.scale_1x1, 0.0)]
        if self.scale_identity is not None:
            branches.append((None, block.rbr_identity, None, self.scale_identity, 0.0))
        for weight, norm, source, scale, bias in branches:
            if weight is not None:
                weight.copy_(source)
            norm.running_mean.zero_()
            norm.running_var.fill_(1 - norm.eps)  # so that BN(x) = weight * x + bias exactly
            norm.weight.copy_(scale * gain)
            norm.bias.copy_(torch.as_tensor(bias).expand_as(norm.bias))
        if self.weight_3x3.is_contiguous(memory_format=torch.channels_last):
            block = block.to(memory_format=torch.channels_last)
        return block.train(self.training)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        weight, bias = self.fused_kernel()
        self.rbr_reparam = deploy_conv(weight, bias, self.stride, self.groups, like=self.weight_3x3)
        del self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1, self.scale_identity, self.bn
        del self.identity
        self.deployed = True
