"""Scoring the best weights of a run on its held-out split(s), at the end of training."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from ..data.augment import tta_views

__all__ = ["score_datamodule"]


@torch.no_grad()
def _probs(model: nn.Module, dm, images: torch.Tensor, tta: str, batch_size: int) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = dm.process(images[i : i + batch_size], training=False).to(device)
        views = tta_views(x, tta)
        out.append((sum(model(v).float().softmax(1) for v in views) / len(views)).cpu())
    return torch.cat(out)


def score_datamodule(model: nn.Module, dm, split: str, *, tta: str = "none", batch_size: int = 128) -> dict:
    """Accuracy and balanced accuracy of ``model`` on an in-memory split, single view and (unless
    ``tta`` is ``none``) with test-time augmentation."""
    images, labels = dm.eval_tensors(split)
    n = len(dm.classes)
    result: dict = {"images": len(labels)}
    variants = [("", "none")] + ([(f"_{tta}", tta)] if tta != "none" else [])
    for suffix, mode in variants:
        probs = _probs(model, dm, images, mode, batch_size)
        result[f"acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="micro").item()
        result[f"balanced_acc{suffix}"] = multiclass_accuracy(probs, labels, n, average="macro").item()
    return result
