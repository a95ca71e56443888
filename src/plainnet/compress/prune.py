"""Pruning: structured channel pruning with Torch-Pruning, and unstructured L1 as the honest baseline.

Structured pruning (Torch-Pruning's dependency graph, ``BasePruner`` with ``GroupMagnitudeImportance``)
physically removes channels, so the network gets smaller and faster. It prunes RepVGG in its training
form: the 3x3, 1x1 and identity branches of a block are one dependency group and keep the same
channels, so re-parameterization afterwards stays exact. "DepGraph: Towards Any Structural Pruning",
Fang et al., CVPR 2023, arXiv:2301.12900.

Unstructured L1 pruning (``torch.nn.utils.prune``) only zeroes weights: dense kernels run no faster
and the file is no smaller. It is kept as a comparison row, reported as such.

A pruned model is saved as an ordinary plainnet checkpoint marked ``pruned``; loading rebuilds the
original architecture and resizes every layer to the shapes in the state dict
(:func:`plainnet.models.structure.resize_to_state_dict`), so the original model is not needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["structured_prune", "unstructured_prune", "weight_sparsity"]

log = logging.getLogger(__name__)


def structured_prune(model: nn.Module, ratio: float, example: torch.Tensor, *, steps: int = 1,
                     between_steps: Callable[[int, nn.Module], None] | None = None,
                     round_to: int | None = None) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable layer group, in place.

    Args:
        model: a plainnet (or torchvision) classifier in training form.
        ratio: fraction of channels to remove, 0 < ratio < 1.
        example: an input batch for tracing the dependency graph.
        steps: iterative pruning: reach ``ratio`` in this many equal steps.
        between_steps: called as ``fn(step, model)`` after each step but the last (e.g. to fine-tune).
        round_to: keep channel counts multiples of this (e.g. 8 for vectorized kernels).
    """
    import torch_pruning as tp

    from ..models.base import classifier_of
    from ..models.reparam import to_standard_form
    from ..models.structure import refresh_channel_info

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio must be between 0 and 1, got {ratio}")
    converted = to_standard_form(model)  # the dependency graph follows the standard three-branch form
    if converted:
        log.info("pruning the standard form of %d online-form RepVGG blocks (the same function)", converted)
    head = classifier_of(model)
    ignored = [m for m in (head,) if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()  # tracing must not update BN statistics
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        iterative_steps=steps, ignored_layers=ignored, round_to=round_to)
    before = sum(p.numel() for p in model.parameters())
    for step in range(steps):
        pruner.step()
        if between_steps is not None and step < steps - 1:
            between_steps(step, model)
    refresh_channel_info(model)
    model.pruned = True
    model.train(was_training)
    after = sum(p.numel() for p in model.parameters())
    log.info("structured pruning %.0f%% of channels in %d step(s): %s -> %s parameters", ratio * 100, steps,
             f"{before:,}", f"{after:,}")
    return model


def unstructured_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` smallest-magnitude weights over all conv and linear layers (global L1), in
    place and permanently. Shapes, file size and speed do not change."""
    from torch.nn.utils import prune

    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)
    return model


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of conv/linear weights that are exactly zero."""
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel()
            zeros += int((m.weight == 0).sum())
    return zeros / max(total, 1)
