"""Scoring the best weights of a run on its held-out split(s), at the end of training."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from ..data.augment import tta_views

__all__ = ["score_datamodule"]


@torch.no_grad()
def _view_probs(model: nn.Module, dm, split: str, tta: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of every test-time view, ``(views, N, classes)``, and the labels."""
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for x, y in dm.eval_batches(split, batch_size):
        probs.append(torch.stack([model(v).float().softmax(1).cpu() for v in tta_views(x.to(device), tta)]))
        labels.append(y)
    return torch.cat(probs, 1), torch.cat(labels)


def score_datamodule(model: nn.Module, dm, split: str, *, tta: str = "none", batch_size: int = 128) -> dict:
    """Accuracy and balanced accuracy of ``model`` on a held-out split, single view and (unless ``tta``
    is ``none``) with test-time augmentation; the plain view is computed once and reused by TTA."""
    n = len(dm.classes)
    views, labels = _view_probs(model, dm, split, tta, batch_size)
    result: dict = {"images": len(labels)}
    variants = [("", views[0])] + ([(f"_{tta}", views.mean(0))] if tta != "none" else [])
    for suffix, probs in variants:
        result[f"acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="micro").item()
        result[f"balanced_acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="macro").item()
    return result
