"""Building blocks of plain conv nets: conv-BN, squeeze-excitation, depthwise-separable conv, and the
RepVGG block.

RepVGG: "RepVGG: Making VGG-style ConvNets Great Again", Ding et al., CVPR 2021, arXiv:2101.03697.
SE: "Squeeze-and-Excitation Networks", Hu et al., CVPR 2018, arXiv:1709.01507.
Depthwise-separable conv: "MobileNets", Howard et al., 2017, arXiv:1704.04861.

Module and attribute names follow the official RepVGG repository (``rbr_dense.conv``, ``rbr_1x1.bn``,
``rbr_identity``, ``se.down``/``se.up``, ``rbr_reparam``) so its checkpoints load without renaming.
A block knows whether it is deployed from an explicit ``deployed`` flag, never from ``hasattr``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .fusion import fuse_conv_bn, identity_kernel, pad_kernel_to

__all__ = [
    "Reparameterizable",
    "ConvBN",
    "SqueezeExcite",
    "RepVGGBlock",
    "DepthwiseSeparableConv",
]

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


class Reparameterizable(nn.Module):
    """A module that can turn itself, in place, into an equivalent inference-only structure.

    ``reparameterize()`` must be idempotent and leave ``deployed`` True. Model-level
    :func:`plainnet.reparameterize` finds every instance, wherever it is nested.
    """

    deployed: bool = False

    def reparameterize(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class ConvBN(Reparameterizable):
    """``Conv2d`` (no bias) followed by BatchNorm; folds into one biased conv.

    ``subsample`` > 1 applies a 1x1 conv's stride by slicing the input first (``x[..., ::s, ::s]``),
    which is the same computation. torch 2.14.1 on x86 CPUs segfaults in the backward pass of a
    strided 1x1 conv with 3-4 input channels in channels_last (RepVGG's stem); the slice avoids that
    kernel entirely. See docs/architecture.md, "Known hazards".
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.subsample = stride if kernel_size == 1 and stride > 1 else 1
        conv_stride = 1 if self.subsample > 1 else stride
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, conv_stride, kernel_size // 2, groups=groups, bias=deploy
        )
        self.bn = nn.Identity() if deploy else norm_layer(out_chs)
        self.deployed = deploy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample > 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        return self.bn(self.conv(x))

    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(weight, bias)`` of the single conv equal to this conv + BN (eval-mode BN)."""
        if self.deployed:
            return self.conv.weight, self.conv.bias
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn, out_dtype=self.conv.weight.dtype)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        weight, bias = self.fused_kernel()
        self.conv.weight.copy_(weight)
        self.conv.bias = nn.Parameter(bias)
        self.bn = nn.Identity()
        self.deployed = True


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> 1x1 conv (reduce) -> ReLU -> 1x1 conv -> sigmoid gate.

    Attribute names ``down``/``up`` follow the official RepVGG code.
    """

    def __init__(self, channels: int, hidden: int, act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = act_layer()
        self.up = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.up(self.act(self.down(s))))


@torch.no_grad()
def deploy_conv(weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, *,
                like: torch.Tensor) -> nn.Conv2d:
    """The fused block's single 3x3 conv holding ``(weight, bias)``, in the memory format of ``like``."""
    # skip_init: the weights are overwritten at once, a random init would be wasted work
    conv = nn.utils.skip_init(nn.Conv2d, weight.shape[1] * groups, weight.shape[0], 3, stride, 1, groups=groups,
                              bias=True, device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    if like.is_contiguous(memory_format=torch.channels_last):
        conv = conv.to(memory_format=torch.channels_last)
    return conv

class RepVGGBlock(Reparameterizable):
    """RepVGG block: ``act(se(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)))``; one 3x3 conv once deployed.

    The identity branch exists only when ``in_chs == out_chs`` and ``stride == 1``. SE (RepVGG-D2se)
    sits after the branch sum and before the activation, and is kept by :meth:`reparameterize`.
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
            has_identity = in_chs == out_chs and stride == 1
            self.rbr_identity = norm_layer(in_chs) if has_identity else None
            self.rbr_dense = ConvBN(in_chs, out_chs, 3, stride, groups, norm_layer=norm_layer)
            self.rbr_1x1 = ConvBN(in_chs, out_chs, 1, stride, groups, norm_layer=norm_layer)
        self.se = SqueezeExcite(out_chs, out_chs // se_ratio) if use_se else nn.Identity()
        self.nonlinearity = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            y = self.rbr_reparam(x)
        else:
            y = self.rbr_dense(x) + self.rbr_1x1(x)
            if self.rbr_identity is not None:
                y = y + self.rbr_identity(x)
        return self.nonlinearity(self.se(y))

    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the 3x3 conv equal to the three branches (differentiable)."""
        if self.deployed:
            return self.rbr_reparam.weight, self.rbr_reparam.bias
        w3, b3 = self.rbr_dense.fused_kernel()
        w1, b1 = self.rbr_1x1.fused_kernel()
        weight, bias = w3 + pad_kernel_to(w1, 3), b3 + b1
        if self.rbr_identity is not None:
            chs = self.rbr_dense.conv.in_channels  # not self.in_chs: pruning may have changed the width
            eye = identity_kernel(chs, self.rbr_dense.conv.groups, 3, dtype=w3.dtype, device=w3.device)
            wi, bi = fuse_conv_bn(eye, None, self.rbr_identity, out_dtype=w3.dtype)
            weight, bias = weight + wi, bias + bi
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        weight, bias = self.fused_kernel()
        self.rbr_reparam = deploy_conv(weight, bias, self.stride, self.rbr_dense.conv.groups,
                                       like=self.rbr_dense.conv.weight)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.deployed = True



class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv + BN + act, then pointwise 1x1 conv + BN + act (MobileNet v1 unit).

    A plain ``nn.Sequential`` of torch layers, so the shared conv-BN folding and structured pruning
    handle it without special cases.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        deploy: bool = False,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=deploy),
            nn.Identity() if deploy else norm_layer(in_chs),
            act_layer(),
            nn.Conv2d(in_chs, out_chs, 1, bias=deploy),
            nn.Identity() if deploy else norm_layer(out_chs),
            act_layer(),
        )
