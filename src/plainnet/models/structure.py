"""Architectures whose layer widths differ from the registered ones (after structured pruning).

:func:`resize_to_state_dict` turns a freshly built model into the pruned architecture described by a
state dict: every conv, linear and BatchNorm layer whose tensors have other shapes is replaced by one of
those shapes (same kernel, stride, padding, groups rule). :func:`refresh_channel_info` updates the
bookkeeping that depends on widths (``num_features``, ``feature_info``, RepVGG block widths).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["resize_to_state_dict", "refresh_channel_info"]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def _conv_like(old: nn.Conv2d, weight: torch.Tensor, has_bias: bool) -> nn.Conv2d:
    out_chs = weight.shape[0]
    depthwise = old.groups > 1 and old.groups == old.in_channels == old.out_channels
    groups = out_chs if depthwise else old.groups
    in_chs = weight.shape[1] * groups
    return nn.Conv2d(in_chs, out_chs, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                     bias=has_bias, padding_mode=old.padding_mode)


def resize_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize ``model``'s layers, in place, to the tensor shapes in ``state``; returns ``model``."""
    for name, module in list(model.named_modules()):
        w = state.get(f"{name}.weight")
        if isinstance(module, nn.Conv2d) and w is not None and w.shape != module.weight.shape:
            _replace(model, name, _conv_like(module, w, f"{name}.bias" in state))
        elif isinstance(module, nn.Linear) and w is not None and w.shape != module.weight.shape:
            _replace(model, name, nn.Linear(w.shape[1], w.shape[0], bias=f"{name}.bias" in state))
        elif isinstance(module, nn.BatchNorm2d):
            mean = state.get(f"{name}.running_mean")
            if mean is not None and mean.shape[0] != module.num_features:
                _replace(model, name, nn.BatchNorm2d(mean.shape[0], module.eps, module.momentum, module.affine,
                                                     module.track_running_stats))
    refresh_channel_info(model)
    model.pruned = True
    return model


@torch.no_grad()
def refresh_channel_info(model: nn.Module) -> None:
    """Recompute width bookkeeping from the layers themselves (after pruning or resizing)."""
    from ..layers import RepVGGBlock
    from .base import FeatureInfo

    for m in model.modules():
        if isinstance(m, RepVGGBlock):
            conv = m.rbr_reparam if m.deployed else m.rbr_dense.conv
            m.in_chs, m.out_chs = conv.in_channels, conv.out_channels
    info = getattr(model, "feature_info", None)
    if info and hasattr(model, "stage_modules"):
        widths = [_out_channels(stage) for stage in model.stage_modules()]
        model.feature_info = [FeatureInfo(w, i.reduction, i.module) for w, i in zip(widths, info)]
        model.num_features = widths[-1]
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear) and hasattr(model, "_head_width"):
        model._head_width = head.in_features


def _out_channels(stage: nn.Module) -> int:
    """A stage's output width: the out-channels of its last conv in module order (a RepVGG block's 1x1
    branch or fused conv, or its SE ``up`` conv; a VGG stage's last conv or pointwise conv)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else 0
