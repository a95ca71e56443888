"""The one interface every plainnet classifier offers, and a backbone wrapper built on it.

``forward = forward_head(forward_features(x))``; ``forward_intermediates`` returns one feature map per
stage (strides 2, 4, 8, 16, 32 at normal input), described by ``feature_info``; ``reset_classifier``
swaps the final Linear. Tests are parametrized over every registered model through this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FeatureInfo", "PlainClassifier", "FeatureExtractor", "classifier_of", "features_and_head",
           "skipped_downsamplings"]


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: its channel count, its stride relative to the input, and the module's name."""

    num_chs: int
    reduction: int
    module: str


class PlainClassifier(nn.Module):
    """Base class: subclasses build ``self.feature_info``, ``self.num_features`` and implement the
    stage iteration, the feature trunk and the head."""

    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    #: Qualified name of the final Linear (``reset_classifier`` replaces it; fine-tuning skips it).
    classifier_name: str
    #: The ``create_model`` name and keyword arguments that rebuild this architecture (set by the registry).
    arch: dict | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stage_modules():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def stage_modules(self) -> list[nn.Module]:
        """The trunk as consecutive callables, one per entry of ``feature_info``."""
        raise NotImplementedError

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | tuple[int, ...] | None = None
    ) -> list[torch.Tensor]:
        """Feature maps after each stage (all of them, or those at ``indices``)."""
        wanted = set(range(len(self.feature_info)) if indices is None else indices)
        last = max(wanted)
        outs = []
        for i, stage in enumerate(self.stage_modules()):
            x = stage(x)
            if i in wanted:
                outs.append(x)
            if i == last:
                break
        return outs

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a fresh one for ``num_classes`` (0 gives pre-logit features)."""
        old = self.get_classifier()
        in_features = self._classifier_in_features
        new = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(old, nn.Linear):
            new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent_name, _, child = self.classifier_name.rpartition(".")
        # Sequential children are registered under their index as a string, so setattr works for both.
        setattr(self.get_submodule(parent_name), child, new)
        self.num_classes = num_classes
        if self.arch:
            self.arch = {**self.arch, "num_classes": num_classes}

    @property
    def _classifier_in_features(self) -> int:
        raise NotImplementedError


class FeatureExtractor(nn.Module):
    """A classifier's trunk as a multi-scale backbone (detection, segmentation).

    Runs only as far as the deepest requested stage and returns those maps; the head is not kept.
    """

    def __init__(self, model: PlainClassifier, out_indices: tuple[int, ...] = (1, 2, 3, 4)) -> None:
        super().__init__()
        n = len(model.feature_info)
        if not out_indices or any(not 0 <= i < n for i in out_indices):
            raise ValueError(f"out_indices must be within 0..{n - 1}, got {out_indices}")
        self.out_indices = tuple(sorted(out_indices))
        self.stages = nn.ModuleList(model.stage_modules()[: self.out_indices[-1] + 1])
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def skipped_downsamplings(small_input: bool, output_stride: int | None) -> int:
    """How many of the five stride-2 steps to drop: 0 (stride 32), 1 (16) or 2 (8)."""
    stride = output_stride or (8 if small_input else 32)
    if stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {stride}")
    return {32: 0, 16: 1, 8: 2}[stride]


def classifier_of(model: nn.Module) -> nn.Module | None:
    """The classifier layer of a plainnet model, a :class:`~plainnet.models.foreign.ForeignClassifier` or
    a timm model (``get_classifier``); ``None`` when it is not known."""
    get = getattr(model, "get_classifier", None)
    return get() if callable(get) else None


def features_and_head(model: nn.Module):
    """``(forward_features, forward_head)`` of a model that splits its forward so (plainnet's, timm's),
    else ``None``."""
    from .foreign import ForeignClassifier

    if isinstance(model, ForeignClassifier):
        return model.features_and_head()
    features, head = getattr(model, "forward_features", None), getattr(model, "forward_head", None)
    return (features, head) if callable(features) and callable(head) else None
