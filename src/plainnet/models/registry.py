"""The model registry: one entry point, ``create_model(name, ...)``, and ``list_models(pattern)``.

Builders register themselves by name when :mod:`plainnet.models` is imported; a duplicate name is an
error and an unknown name gets close-match suggestions.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UnknownModelError

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "model_entry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, family: str, paper: str = "") -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, builder, family, paper)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"repvgg_b*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `plainnet models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


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
    entry = model_entry(name)
    arch = {"name": name, "num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if weights is not None or pretrained:
        from .weights import resolve_pretrained, load_weights, read_state_dict, detect_deploy_form

        state = read_state_dict(weights) if weights is not None else resolve_pretrained(name)
        if deploy is None:
            deploy = detect_deploy_form(state, arch)
        model = _build(entry, arch, deploy)
        load_weights(model, state, exclude_head=pretrained and weights is None and num_classes != 1000)
        return model
    return _build(entry, arch, bool(deploy))


EXTERNAL_PREFIXES = ("torchvision.", "timm.")


def _external(name: str, num_classes: int, in_chans: int, *, weights, pretrained: bool, **kwargs) -> nn.Module:
    """A torchvision or timm classifier by name (``torchvision.resnet50``, ``timm.convnext_tiny``), so the
    usual baselines train and compare through the same pipeline. Never downloads: ``pretrained=True``
    is refused, local ``weights`` are loaded strictly."""
    library, _, model_name = name.partition(".")
    if pretrained:
        from ..errors import WeightsError

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
        from .weights import load_weights

        load_weights(model, weights)
    return model


def _build(entry: ModelEntry, arch: dict, deploy: bool) -> nn.Module:
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    model = entry.builder(deploy=deploy, **kwargs)
    # Only plain values are recorded: they are saved with checkpoints and must load with weights_only.
    model.arch = {k: v for k, v in arch.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return model
