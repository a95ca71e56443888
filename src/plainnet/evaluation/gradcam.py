"""Grad-CAM: where in the image the evidence for a class lies.

"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", Selvaraju et al.,
ICCV 2017, arXiv:1610.02391. The class score's gradient with respect to the last feature map, averaged
over space, weights that map's channels; their ReLU'd sum, upsampled, is the heat-map. Works on
plainnet models in both forms (through ``forward_features`` / ``forward_head``) and, through a hook on
the last convolution, on other classifiers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import features_and_head

__all__ = ["grad_cam"]


def _features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    split = features_and_head(model)
    if split is not None:
        feats = split[0](x)
        return feats, split[1](feats)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional model")
    captured = []
    handle = convs[-1].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1], logits


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat-maps in [0, 1] of shape ``(N, H, W)`` (input size) for ``target`` classes (default: the
    predicted ones), and the logits."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)  # gradients flow even if every weight is frozen
    with torch.enable_grad():
        feats, logits = _features_and_logits(model, x)
        idx = logits.argmax(1) if target is None else target.to(logits.device)
        score = logits.float().gather(1, idx[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    weights = grads.float().mean((2, 3), keepdim=True)
    cam = F.relu((weights * feats.detach().float()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu(), logits.detach().float().cpu()
