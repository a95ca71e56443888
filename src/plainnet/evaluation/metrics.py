"""Scoring a model on labelled images: logits with optional test-time augmentation, and metrics
computed with torchmetrics."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

__all__ = ["TTA_MODES", "tta_views", "predict_probs", "evaluate_datamodule"]

TTA_MODES = ("none", "hflip", "flips")


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The test-time views of a batch: itself, plus mirrored copies (``hflip``: left-right;
    ``flips``: left-right, up-down and both)."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    views = [x]
    if mode in ("hflip", "flips"):
        views.append(x.flip(-1))
    if mode == "flips":
        views += [x.flip(-2), x.flip(-1).flip(-2)]
    return views


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterable[torch.Tensor], tta: str = "none") -> torch.Tensor:
    """Softmax probabilities for preprocessed batches, averaged over the TTA views."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for x in batches:
        x = x.to(device)
        views = tta_views(x, tta)
        probs = sum(model(v).float().softmax(1) for v in views) / len(views)
        out.append(probs.cpu())
    return torch.cat(out)


def evaluate_datamodule(model: nn.Module, dm, split: str, *, tta: str = "none", batch_size: int = 128) -> dict:
    """Accuracy and balanced accuracy of ``model`` on a split of an in-memory data module, single view
    and (when ``tta`` is not ``none``) with test-time augmentation."""
    images, labels = dm.eval_tensors(split)
    batches = (dm.process(images[i : i + batch_size], training=False) for i in range(0, len(labels), batch_size))
    n_cls = len(dm.classes)
    result = {"images": len(labels)}
    probs = predict_probs(model, batches, "none")
    result["acc"] = multiclass_accuracy(probs, labels, n_cls, average="micro").item()
    result["balanced_acc"] = multiclass_accuracy(probs, labels, n_cls, average="macro").item()
    if tta != "none":
        batches = (dm.process(images[i : i + batch_size], training=False)
                   for i in range(0, len(labels), batch_size))
        probs = predict_probs(model, batches, tta)
        result[f"acc_{tta}"] = multiclass_accuracy(probs, labels, n_cls, average="micro").item()
        result[f"balanced_acc_{tta}"] = multiclass_accuracy(probs, labels, n_cls, average="macro").item()
    return result
