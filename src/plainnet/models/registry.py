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

__all__ = ["FamilyTraits", "ModelEntry", "register_model", "list_models", "model_entry", "close_names", "traits_of",
           "build", "EXTERNAL_PREFIXES"]


@dataclass(frozen=True)
class FamilyTraits:
    """What the rest of plainnet needs to know about a model, declared where it is registered: the
    recipe, training, pruning, compression, the report and the benchmarks ask these, never the name."""

    family: str
    #: Built by another library (torchvision, timm): plainnet's architecture options (output_stride,
    #: drop_rate, head, train_form) do not apply and it has no plainnet fused form.
    foreign: bool = False
    #: Its training form is multi-branch and fuses into a different, single-path structure (RepVGG):
    #: the report draws both forms.
    branches: bool = False
    #: The training forms it can be built in (``model.train_form``).
    train_forms: tuple[str, ...] = ("standard",)
    #: BatchNorm after its convolutions: without it, or with ``fc_head``, the recipe's learning rate is 10x lower
    #: (plain VGG diverged at 0.1).
    batch_norm: bool = True
    #: Its default head is wide fully connected layers (VGG's 4096-wide classifier), which ``head="gap"``
    #: replaces; the slim-head, gap-head and dws compressions apply to it.
    fc_head: bool = False
    #: The recipe's dropout before the classifier.
    drop_rate: float = 0.0
    #: Whether its published weights keep the network's own strides (RepVGG's identity branches
    #: depend on them): fine-tuning them keeps ``output_stride=32``.
    fixed_strides_when_pretrained: bool = False


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    paper: str
    traits: FamilyTraits

    @property
    def family(self) -> str:
        return self.traits.family


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, family: str, paper: str = "",
                   traits: FamilyTraits | None = None) -> None:
    """Register ``builder(deploy=bool, **arch)`` as ``name``, with its family's ``traits`` (default:
    a plainnet network with BN, a GAP head and one training form)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if traits is not None and traits.family != family:
        raise ValueError(f"model {name!r}: traits of family {traits.family!r} given for family {family!r}")
    _REGISTRY[name] = ModelEntry(name, builder, paper, traits or FamilyTraits(family))


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"repvgg_b*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def close_names(name: str) -> list[str]:
    """Up to three registered names like ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = close_names(name)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `plainnet models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


EXTERNAL_PREFIXES = ("torchvision.", "timm.")


def traits_of(name: str) -> FamilyTraits:
    """The traits of a registered model, or of a torchvision/timm classifier by name (the adapter for
    foreign models: torchvision's VGGs are VGGs, with BN only as ``*_bn``)."""
    library, _, foreign = name.partition(".")
    if name.startswith(EXTERNAL_PREFIXES):
        vgg = library == "torchvision" and foreign.startswith("vgg")
        return FamilyTraits(library, foreign=True, batch_norm=not vgg or foreign.endswith("_bn"), fc_head=vgg)
    return model_entry(name).traits


def plain_arch(arch: dict) -> dict:
    """The plain values of an architecture record: what is saved with checkpoints (and must load with
    ``weights_only``)."""
    return {k: v for k, v in arch.items() if isinstance(v, (str, int, float, bool, type(None)))}


def build(name: str, deploy: bool = False, **kwargs: Any) -> nn.Module:
    """A registered model with fresh weights, in its training (or fused, ``deploy=True``) structure; it
    records the plain values of its architecture in ``model.arch`` (saved with checkpoints)."""
    model = model_entry(name).builder(deploy=deploy, **kwargs)
    model.arch = plain_arch({"name": name, **kwargs})
    return model
