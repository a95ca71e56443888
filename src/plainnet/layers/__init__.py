"""Layers of plain conv nets and the pure fusion math (depends on torch only)."""

from .blocks import ConvBN, DepthwiseSeparableConv, RepVGGBlock, Reparameterizable, SqueezeExcite
from .online import OnlineRepVGGBlock
from .fusion import fold_conv_bn_sequence, fuse_conv_bn, identity_kernel, pad_kernel_to

__all__ = [
    "ConvBN",
    "DepthwiseSeparableConv",
    "OnlineRepVGGBlock",
    "RepVGGBlock",
    "Reparameterizable",
    "SqueezeExcite",
    "fold_conv_bn_sequence",
    "fuse_conv_bn",
    "identity_kernel",
    "pad_kernel_to",
]
