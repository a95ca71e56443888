"""The model registry: builders by name, ``list_models(pattern)``, and :func:`build` (fresh weights).

Builders register themselves by name when :mod:`plainnet.models` is imported; a duplicate name is an
error and an unknown name gets close-match suggestions. :func:`plainnet.models.create_model` (module
``create``) adds weights and the torchvision/timm names on top.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UnknownModelError

__all__ = ["ModelEntry", "register_model", "list_models", "model_entry", "build", "EXTERNAL_PREFIXES"]


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


EXTERNAL_PREFIXES = ("torchvision.", "timm.")


def build(name: str, deploy: bool = False, **kwargs: Any) -> nn.Module:
    """A registered model with fresh weights, in its training (or fused, ``deploy=True``) structure; it
    records the plain values of its architecture in ``model.arch`` (saved with checkpoints)."""
    arch = {"name": name, **kwargs}
    model = model_entry(name).builder(deploy=deploy, **kwargs)
    # Only plain values are recorded: they are saved with checkpoints and must load with weights_only.
    model.arch = {k: v for k, v in arch.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return model
