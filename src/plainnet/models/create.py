"""``create_model(name, ...)``: a registered plainnet model, or a torchvision/timm classifier by name,
with fresh, local or published weights."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UnknownModelError, WeightsError
from .registry import EXTERNAL_PREFIXES, build
from .weights import detect_deploy_form, load_weights, read_state_dict, resolve_pretrained

__all__ = ["create_model"]


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    pretrained: bool = False,
    weights: str | Path | dict | None = None,
    deploy: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or ``torchvision.NAME`` / ``timm.NAME`` for those libraries'
            classifiers (randomly initialized, or from local ``weights``).
        num_classes: size of the classifier output (0: no classifier, pre-logit features).
        in_chans: input channels.
        pretrained: load the published ImageNet weights (torchvision's files for VGG; from the torch
            hub cache, downloaded where the network allows). With ``num_classes != 1000`` the backbone
            is loaded and the head is new.
        weights: a checkpoint path or state dict in any dialect :func:`load_weights` reads. Its form
            (training or fused) is detected from the keys unless ``deploy`` is given.
        deploy: build the fused inference structure directly (one 3x3 conv per RepVGG block, BN folded
            into VGG convs). ``None`` means training form, or the checkpoint's form when ``weights`` is set.
        **kwargs: architecture options (``small_input``, ``head``, ``drop_rate``, ``norm_layer``...).
    """
    if name.startswith(EXTERNAL_PREFIXES):
        return _external(name, num_classes, in_chans, weights=weights, pretrained=pretrained, **kwargs)
    arch = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if weights is not None or pretrained:
        state = read_state_dict(weights) if weights is not None else resolve_pretrained(name)
        if deploy is None:
            deploy = detect_deploy_form(state, {"name": name, **arch})
        model = build(name, deploy, **arch)
        load_weights(model, state, exclude_head=pretrained and weights is None and num_classes != 1000)
        return model
    return build(name, bool(deploy), **arch)


def _external(name: str, num_classes: int, in_chans: int, *, weights, pretrained: bool, **kwargs) -> nn.Module:
    """A torchvision or timm classifier by name (``torchvision.resnet50``, ``timm.convnext_tiny``), so the
    usual baselines train and compare through the same pipeline. Never downloads: ``pretrained=True``
    is refused, local ``weights`` are loaded strictly."""
    library, _, model_name = name.partition(".")
    if pretrained:
        raise WeightsError(f"{name}: pass weights=PATH (a local checkpoint); plainnet does not download")
    if library == "torchvision":
        import torchvision

        if in_chans != 3:
            raise ValueError("torchvision models take 3 input channels")
        try:
            model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)
        except ValueError:
            close = difflib.get_close_matches(model_name, torchvision.models.list_models(), n=3)
            hint = f"; did you mean {', '.join('torchvision.' + c for c in close)}?" if close else ""
            raise UnknownModelError(f"unknown torchvision model {model_name!r}{hint}") from None
    else:
        try:
            import timm
        except ImportError:
            raise UnknownModelError(f"{name} needs timm: pip install timm") from None
        if not timm.is_model(model_name):
            raise UnknownModelError(f"unknown timm model {model_name!r}")
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.arch = {"name": name, "num_classes": num_classes, "in_chans": in_chans,
                  **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, type(None)))}}
    if weights is not None:
        load_weights(model, weights)
    return model
