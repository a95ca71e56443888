"""RepVGG's online training form: the three branches merged into one 3x3 kernel on every step.

OREPA-style linear scaling (Hu et al., "Online Convolutional Re-parameterization", CVPR 2022,
arXiv:2204.00826) applied to the RepVGG block: each branch's BatchNorm becomes a learnable per-channel
scale, which keeps the three branches linear, so their sum *is* one 3x3 convolution with the kernel
``s3*W3 + pad(s1*W1) + si*I``; one BatchNorm follows it. Training then runs one convolution per block,
as the fused network does, instead of two convolutions, three BatchNorms and two sums.

Two autograd functions keep training memory at the fused network's: one activation per block.

* The merged convolution keeps only its input for the backward pass and rebuilds the kernel there (a
  weight-sized sum, cheap), instead of storing a kernel per block.
* BatchNorm + ReLU keep only the BN's input: the ReLU's output, which the next block's convolution needs
  for its weight gradient, is recomputed from it there (one elementwise pass) instead of being kept.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .blocks import ActLayer, NormLayer, Reparameterizable, RepVGGBlock, SqueezeExcite, deploy_conv
from .fusion import fuse_conv_bn

__all__ = ["OnlineRepVGGBlock", "merged_kernel"]


def _identity_index(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output channel, its own input channel within its group): where the identity kernel holds 1."""
    out = torch.arange(kernel.shape[0], device=kernel.device)
    return out, out % kernel.shape[1]


def merged_kernel(w3: torch.Tensor, w1: torch.Tensor, s3: torch.Tensor, s1: torch.Tensor,
                  si: torch.Tensor | None) -> torch.Tensor:
    """``s3*W3 + pad(s1*W1) + si*I``: the one 3x3 kernel equal to the three scaled branches (one pass
    over the kernel; the 1x1 and identity terms are added at its centre)."""
    kernel = w3 * s3.view(-1, 1, 1, 1)
    centre = kernel[:, :, 1, 1]
    centre += w1[:, :, 0, 0] * s1.view(-1, 1)
    if si is not None:
        out, own = _identity_index(kernel)
        centre[out, own] += si
    return kernel


#: Devices with an autocast mode (others: meta tensors when a model is summarized, run as they are).
AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def _no_autocast(device: str):
    return torch.autocast(device, enabled=False) if device in AUTOCAST_DEVICES else contextlib.nullcontext()


def _like(kernel: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``kernel`` in ``dtype`` and in ``x``'s memory format (one copy at most)."""
    cl = x.is_contiguous(memory_format=torch.channels_last)
    return kernel.to(dtype=dtype, memory_format=torch.channels_last if cl else torch.preserve_format)


def _rows(w: torch.Tensor) -> torch.Tensor:
    """A kernel as one row per output channel, without a copy where it is contiguous or channels_last."""
    if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        w = w.permute(0, 2, 3, 1)
    return w.reshape(w.shape[0], -1)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum((1, 2, 3))`` in one pass over the two kernels (no product tensor)."""
    if a.stride() != b.stride():
        b = b.contiguous(memory_format=torch.channels_last) if a.is_contiguous(
            memory_format=torch.channels_last) and not a.is_contiguous() else b.contiguous()
    return torch.linalg.vecdot(_rows(a), _rows(b))


class _Recompute:
    """How to rebuild ``relu(bn(c))`` from the BN's input ``c`` and the batch statistics it was
    normalised with. The output tensor carries it, so that the next convolution keeps ``c`` (handed
    over in :attr:`c`, then dropped here: only the autograd graph's saved tensors hold activations, and
    they are freed as the backward pass goes) instead of the output. The rebuild is the BN's own
    elementwise kernel with those statistics: the forward pass's values up to float rounding, in their
    dtype (under bf16, no float32 temporary)."""

    def __init__(self, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 invstd: torch.Tensor, eps: float) -> None:
        self.c: torch.Tensor | None = c
        self.weight, self.bias, self.mean, self.eps = weight, bias, mean, eps
        self.var = invstd.pow(-2) - eps  # what eval-mode BN turns back into ``invstd``
        self.output: torch.Tensor | None = None  # rebuilt once in backward, for the BN's own backward

    def take(self) -> torch.Tensor | None:
        """``c`` for the convolution that saves it in place of its input (the first to ask)."""
        c, self.c = self.c, None
        return c

    def rebuild(self, c: torch.Tensor) -> torch.Tensor:
        y = torch.native_batch_norm(c, self.weight, self.bias, self.mean, self.var, False, 0.0, self.eps)[0]
        self.output = y.relu_()
        return self.output


class _BatchNormReLU(torch.autograd.Function):
    """``relu(batch_norm(c))`` in training mode that saves only ``c`` (which the BN needs anyway)."""

    @staticmethod
    def forward(ctx, c, weight, bias, running_mean, running_var, momentum: float, eps: float):
        z, mean, invstd = torch.native_batch_norm(c, weight, bias, running_mean, running_var, True, momentum, eps)
        y = z.relu_()
        ctx.recompute = _Recompute(c, weight.detach(), bias.detach(), mean, invstd, eps)
        ctx.save_for_backward(c, weight, mean, invstd)
        ctx.eps = eps
        y.plainnet_recompute = ctx.recompute
        return y

    @staticmethod
    def backward(ctx, grad_y):
        c, weight, mean, invstd = ctx.saved_tensors
        recompute = ctx.recompute  # kept: a second backward (retain_graph) rebuilds again
        recompute.c = None  # (no convolution took it)
        y = recompute.output if recompute.output is not None else recompute.rebuild(c)
        recompute.output = None
        grad_z = torch.ops.aten.threshold_backward(grad_y, y, 0)
        del y  # before the BN's backward allocates its gradient
        grad_c, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_z, c, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3]))
        return grad_c, grad_w, grad_b, None, None, None, None


def _batch_norm_relu(bn: nn.BatchNorm2d, c: torch.Tensor) -> torch.Tensor:
    """:class:`_BatchNormReLU` with ``bn``'s running-statistics bookkeeping (as ``nn.BatchNorm2d``)."""
    momentum = bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    return _BatchNormReLU.apply(c, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum or 0.0, bn.eps)


class _MergedConv(torch.autograd.Function):
    """``conv3x3(x, merged_kernel(...))`` that saves only ``x`` (and the parameters) for backward, or,
    where ``x`` came out of :class:`_BatchNormReLU`, only what ``x`` is rebuilt from."""

    @staticmethod
    def forward(ctx, x, w3, w1, s3, s1, si, stride: int, groups: int):
        device = x.device.type
        autocast = device in AUTOCAST_DEVICES and torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
        xc = x.to(dtype)
        with _no_autocast(device):
            kernel = _like(merged_kernel(w3, w1, s3, s1, si), xc, dtype)
            y = torch.ops.aten.convolution(xc, kernel, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], groups)
        recompute = getattr(xc, "plainnet_recompute", None)
        c = recompute.take() if recompute is not None else None
        ctx.recompute = recompute if c is not None else None
        ctx.save_for_backward(xc if c is None else c, w3, w1, s3, s1, si)
        ctx.stride, ctx.groups, ctx.x_dtype = stride, groups, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        xc, w3, w1, s3, s1, si = ctx.saved_tensors
        if ctx.recompute is not None:  # the input was not kept: rebuild it from the BN input
            xc = ctx.recompute.rebuild(xc)
        with torch.no_grad(), _no_autocast(xc.device.type):
            kernel = _like(merged_kernel(w3, w1, s3, s1, si), xc, xc.dtype)
            grad_x, grad_k, _ = torch.ops.aten.convolution_backward(
                grad_y.to(xc.dtype), xc, kernel, None, [ctx.stride] * 2, [1, 1], [1, 1], False, [0, 0],
                ctx.groups, [ctx.needs_input_grad[0], True, False])
            grad_k = grad_k.to(w3.dtype)
            centre = grad_k[:, :, 1, 1]
            grads = [grad_x.to(ctx.x_dtype) if grad_x is not None else None,
                     grad_k * s3.view(-1, 1, 1, 1), (centre * s1.view(-1, 1))[:, :, None, None],
                     _rowdot(grad_k, w3), (centre * w1[:, :, 0, 0]).sum(1),
                     centre[_identity_index(grad_k)] if si is not None else None]
        return (*grads, None, None)


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
            self.bn = norm_layer(out_chs)
        self.se = SqueezeExcite(out_chs, out_chs // se_ratio) if use_se else nn.Identity()
        self.nonlinearity = act_layer()

    def merged_kernel(self) -> torch.Tensor:
        """The one 3x3 kernel of the three branches (before the BN)."""
        return merged_kernel(self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1,
                             self.scale_identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            y = self.rbr_reparam(x)
        else:
            y = _MergedConv.apply(x, self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1,
                                  self.scale_identity, self.stride, self.groups)
            if self.training and self._bn_relu_fusable():
                return _batch_norm_relu(self.bn, y)
            y = self.bn(y)
        return self.nonlinearity(self.se(y))

    def _bn_relu_fusable(self) -> bool:
        """BN and ReLU directly after each other (no SE between): one function keeps only the BN input."""
        return (type(self.bn) is nn.BatchNorm2d and self.bn.affine and isinstance(self.se, nn.Identity)
                and type(self.nonlinearity) is nn.ReLU)

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

    @classmethod
    @torch.no_grad()
    def from_standard(cls, block: RepVGGBlock) -> "OnlineRepVGGBlock":
        """The online block computing the same function in eval mode as a standard block (the inverse
        of :meth:`to_standard`): each branch keeps its kernel, its BN's eval-mode gain becomes the
        branch scale, and the branches' BN shifts sum into this block's BN (unit gain, neutral running
        statistics). How pretrained standard-form weights start an online-form fine-tune."""
        if block.deployed:
            raise ValueError("a fused block has no training form to convert")
        dense = block.rbr_dense.conv.weight
        online = cls(block.in_chs, block.out_chs, block.stride, block.groups, act_layer=type(block.nonlinearity))
        online = online.to(device=dense.device, dtype=dense.dtype)
        online.se, online.nonlinearity = block.se, block.nonlinearity
        shift = torch.zeros_like(online.bn.bias)
        branches = [(block.rbr_dense.bn, online.scale_3x3), (block.rbr_1x1.bn, online.scale_1x1)]
        if block.rbr_identity is not None:
            branches.append((block.rbr_identity, online.scale_identity))
        for norm, scale in branches:
            gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            scale.copy_(gain)
            shift += norm.bias - norm.running_mean * gain
        online.weight_3x3.copy_(dense)
        online.weight_1x1.copy_(block.rbr_1x1.conv.weight)
        online.bn.running_mean.zero_()
        online.bn.running_var.fill_(1 - online.bn.eps)
        online.bn.weight.fill_(1.0)
        online.bn.bias.copy_(shift)
        if dense.is_contiguous(memory_format=torch.channels_last):
            online = online.to(memory_format=torch.channels_last)
        return online.train(block.training)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        weight, bias = self.fused_kernel()
        self.rbr_reparam = deploy_conv(weight, bias, self.stride, self.groups, like=self.weight_3x3)
        del self.weight_3x3, self.weight_1x1, self.scale_3x3, self.scale_1x1, self.scale_identity, self.bn
        self.deployed = True
