"""Scoring the best weights of a run on its held-out split(s), at the end of training."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from ..data.augment import tta_views

__all__ = ["score_datamodule"]


@torch.no_grad()
def _probs(model: nn.Module, dm, split: str, tta: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for x, y in dm.eval_batches(split, batch_size):
        views = tta_views(x.to(device), tta)
        probs.append((sum(model(v).float().softmax(1) for v in views) / len(views)).cpu())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def score_datamodule(model: nn.Module, dm, split: str, *, tta: str = "none", batch_size: int = 128) -> dict:
    """Accuracy and balanced accuracy of ``model`` on a held-out split, single view and (unless ``tta``
    is ``none``) with test-time augmentation."""
    n = len(dm.classes)
    result: dict = {}
    variants = [("", "none")] + ([(f"_{tta}", tta)] if tta != "none" else [])
    for suffix, mode in variants:
        probs, labels = _probs(model, dm, split, mode, batch_size)
        result["images"] = len(labels)
        result[f"acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="micro").item()
        result[f"balanced_acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="macro").item()
    return result
