"""Test helpers (imported by test modules)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so fusion is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features

            def u(lo, hi):
                return (torch.rand(n, generator=g) * (hi - lo) + lo).to(m.running_mean)

            m.running_mean.copy_(u(-0.5, 0.5))
            m.running_var.copy_(u(0.5, 2.0))
            m.weight.copy_(u(0.5, 1.5))
            m.bias.copy_(u(-0.5, 0.5))
    return model


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
