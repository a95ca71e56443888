"""A torchvision or timm classifier as plainnet holds it.

The library's module stays untouched inside :class:`ForeignClassifier`; what plainnet knows of it -- the
architecture record saved with checkpoints, which layer is the classifier, the published weights it came
from -- is declared on the wrapper, never patched onto the library's module (whose own attributes, such
as timm's ``pretrained_cfg``, stay as the library made them).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ForeignClassifier", "PREFIX"]

#: The wrapped module's name: its tensors are ``net.<the library's key>`` in plainnet checkpoints.
PREFIX = "net."


class ForeignClassifier(nn.Module):
    """``net`` (a torchvision or timm classifier) with plainnet's record of it.

    Args:
        net: the library's model.
        arch: what rebuilds it (``name``, ``num_classes``, ``in_chans`` and the plain options), saved
            with checkpoints.
        pretrained_cfg: the published weights it was built from (``source``, ``preprocess``...), if any.
    """

    def __init__(self, net: nn.Module, arch: dict, pretrained_cfg: dict | None = None):
        super().__init__()
        self.net, self.arch, self.pretrained_cfg = net, arch, pretrained_cfg
        head = _head_name(net, arch.get("num_classes", 0))
        self.classifier_name = PREFIX + head if head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def get_classifier(self) -> nn.Module | None:
        return self.get_submodule(self.classifier_name) if self.classifier_name else None

    def features_and_head(self):
        """``(forward_features, forward_head)`` when the library splits its forward so (timm), else ``None``."""
        features, head = getattr(self.net, "forward_features", None), getattr(self.net, "forward_head", None)
        return (features, head) if callable(features) and callable(head) else None

    @staticmethod
    def own_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with the wrapper's keys: a library's own state dict (or a checkpoint written before
        plainnet wrapped foreign models) gets the ``net.`` prefix; a wrapper's is unchanged."""
        if any(k.startswith(PREFIX) for k in state):
            return dict(state)
        return {PREFIX + k: v for k, v in state.items()}


def _head_name(net: nn.Module, num_classes: int) -> str | None:
    """The name of ``net``'s classifier layer: timm's ``get_classifier()``, else the last linear or
    convolution layer with ``num_classes`` outputs (torchvision's heads)."""
    get = getattr(net, "get_classifier", None)
    if callable(get):
        head = get()
        return next((n for n, m in net.named_modules() if m is head and n), None)
    if num_classes <= 0:
        return None
    heads = [n for n, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return heads[-1] if heads else None
