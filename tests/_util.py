"""Test helpers (imported by test modules)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_bn_(model: nn.Module, x: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so fusion is tested
    for real (fresh BNs are the identity: mean 0, var 1, gamma 1, beta 0).

    gamma and beta are drawn at random; the running statistics are then measured on random inputs in
    training mode (and the variances widened at random), so they are far from (0, 1) yet keep a deep
    network's activations in range. Purely random statistics make a 40-layer net chaotic, and any two
    float summation orders then disagree by more than the values themselves.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        n = m.num_features
        m.weight.copy_((torch.rand(n, generator=g) * 0.7 + 0.3).to(m.weight))
        m.bias.copy_(((torch.rand(n, generator=g) - 0.5) * 0.4).to(m.bias))
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    if x is None:
        in_chans = getattr(model, "arch", None) and model.arch.get("in_chans") or 3
        x = torch.randn(8, in_chans, 32, 32, generator=g) * 2 + 0.5
    was_training = model.training
    model.train()
    model(x.to(next(model.parameters())))
    model.train(was_training)
    for m in bns:
        m.momentum = 0.1
        # Dead (all-zero after ReLU) channels measure a variance near 0, which in eval mode would divide
        # any later deviation by sqrt(eps); widen every variance a little, at random.
        m.running_var.mul_(1 + torch.rand(m.num_features, generator=g).to(m.running_var)).add_(0.05)
    return model


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
