"""Scoring the best weights of a run on its held-out split(s), at the end of training."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from ..evaluation.metrics import view_probs

__all__ = ["score_datamodule"]


def score_datamodule(model: nn.Module, dm, split: str, *, tta: str = "none", batch_size: int = 128) -> dict:
    """Accuracy and balanced accuracy of ``model`` on a held-out split, single view and (unless ``tta``
    is ``none``) with test-time augmentation; the plain view is computed once and reused by TTA."""
    model.eval()
    device = next(model.parameters()).device
    labels: list[torch.Tensor] = []

    def batches():
        for x, y in dm.eval_batches(split, batch_size):
            labels.append(y)
            yield x.to(device)

    views = view_probs(model, batches(), tta=tta)
    n, y = len(dm.classes), torch.cat(labels)
    # what always answering the largest class would score: the bar a model that learned must clear
    result: dict = {"images": len(y), "largest_class_share": torch.bincount(y, minlength=n).max().item() / max(len(y), 1)}
    variants = [("", views[0])] + ([(f"_{tta}", views.mean(0))] if tta != "none" else [])
    for suffix, probs in variants:
        result[f"acc{suffix}"] = multiclass_accuracy(probs, y, n, average="micro").item()
        result[f"balanced_acc{suffix}"] = multiclass_accuracy(probs, y, n, average="macro").item()
    return result
