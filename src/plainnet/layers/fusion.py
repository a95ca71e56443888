"""Pure, differentiable fusion math shared by RepVGG fusion, VGG-BN folding and pruning.

Everything here maps tensors to tensors. Nothing switches module modes: the modules in
:mod:`plainnet.layers.blocks` and the model classes decide *when* to fuse, this file only says *how*.
Kernels are built with torch in the caller's dtype and device (the official RepVGG code builds the
identity kernel in NumPy, which silently turns a bf16 model's fused weights into fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "fuse_conv_bn",
    "identity_kernel",
    "pad_kernel_to",
    "fold_conv_bn_sequence",
]


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # The per-channel BN arithmetic in float64 where the device has it (a few numbers per channel).
    return torch.float32 if t.device.type == "mps" else torch.float64


def _kernel_dtype(weight: torch.Tensor) -> torch.dtype:
    # The kernel itself is scaled in float32 (float64 kernels stay float64): one rounding of a product,
    # at a quarter of the memory traffic of a float64 copy, which was most of the time of fusing
    # RepVGG-B3 (2.4 s).
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def fuse_conv_bn(
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    bn: nn.BatchNorm2d,
    *,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference-mode BatchNorm into the conv that feeds it.

    ``BN(conv(x)) = conv'(x)`` with ``w' = w * g / s`` and ``b' = beta + (b - mean) * g / s``, where
    ``s = sqrt(running_var + eps)``.

    Args:
        weight: conv kernel ``(out, in/groups, kh, kw)``; ``None`` means the BN stands alone and the
            caller supplies an identity kernel afterwards (only the bias is meaningful then).
        bias: conv bias or ``None``.
        bn: the BatchNorm whose running statistics and affine parameters are folded.
        out_dtype: dtype of the returned tensors; defaults to the BN parameters' dtype.

    Returns:
        The fused ``(weight, bias)``; ``weight`` is ``None``-shaped only if ``weight`` was ``None``.
    """
    ref = bn.running_var if bn.running_var is not None else bn.weight
    dtype = out_dtype or (bn.weight.dtype if bn.weight is not None else ref.dtype)
    work = _compute_dtype(ref)
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fuse a BatchNorm without running statistics (track_running_stats=False)")
    mean = bn.running_mean.to(work)
    var = bn.running_var.to(work)
    gamma = bn.weight.to(work) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(work) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = bias.to(work) if bias is not None else torch.zeros_like(mean)
    fused_bias = beta + (b - mean) * scale
    fused_weight = None
    if weight is not None:
        kd = _kernel_dtype(weight)
        fused_weight = (weight.to(kd) * scale.to(kd).reshape(-1, *([1] * (weight.dim() - 1)))).to(dtype)
    return fused_weight, fused_bias.to(dtype)


def identity_kernel(
    channels: int,
    groups: int = 1,
    kernel_size: int = 3,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``kernel_size`` conv kernel that maps x to x: 1 at the centre of each channel's own input."""
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=dtype, device=device)
    centre = kernel_size // 2
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % per_group, centre, centre] = 1
    return kernel


def pad_kernel_to(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad a smaller odd square kernel (e.g. 1x1) to ``kernel_size`` around its centre."""
    pad = (kernel_size - kernel.shape[-1]) // 2
    if pad < 0:
        raise ValueError(f"kernel {tuple(kernel.shape[-2:])} is larger than {kernel_size}")
    return F.pad(kernel, [pad] * 4) if pad else kernel


@torch.no_grad()
def fold_conv_bn_sequence(seq: nn.Sequential) -> int:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside ``seq``, in place.

    The BN becomes ``nn.Identity`` (so indices, and with them state-dict keys of the other layers, stay
    put) and the conv gains a bias. Returns the number of pairs folded.
    """
    folded = 0
    for i in range(len(seq) - 1):
        conv, bn = seq[i], seq[i + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            w, b = fuse_conv_bn(conv.weight, conv.bias, bn, out_dtype=conv.weight.dtype)
            conv.weight.copy_(w)
            if conv.bias is None:
                conv.bias = nn.Parameter(b)
            else:
                conv.bias.copy_(b)
            seq[i + 1] = nn.Identity()
            folded += 1
    return folded
