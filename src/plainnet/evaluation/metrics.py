"""Classification metrics (torchmetrics) and test-time augmentation.

Test-time augmentation averages class probabilities over views: mirrored copies (``hflip``/``flips``)
and, as in the VGG paper's multi-scale evaluation (Simonyan & Zisserman, arXiv:1409.1556, Sec. 3.2),
the same crop rescaled to several sizes -- plain nets with global pooling accept any input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from ..data.augment import tta_views

__all__ = ["Agreement", "accuracy", "classification_metrics", "compare_on", "parse_scales", "predict_probs",
           "predicted_classes", "view_probs"]


def parse_scales(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """``"0.875,1,1.143"`` -> ``(0.875, 1.0, 1.143)``; empty means the single scale 1."""
    if not text:
        return (1.0,)
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if any(not 0.25 <= v <= 4 for v in values):
        raise ValueError(f"scales must lie in [0.25, 4], got {values}")
    return tuple(values)


@torch.no_grad()
def view_probs(model: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor], *,
               tta: str = "none", scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Softmax probabilities of preprocessed batches for every test-time view -- each scale, and each
    mirrored view of it -- as ``(views, N, classes)``; the plain view (scale 1 first) is ``[0]``."""
    out = []
    for x in batches:
        views = []
        for s in scales:
            xs = x if s == 1.0 else F.interpolate(
                x, scale_factor=s, mode="bilinear", antialias=s < 1, align_corners=False)
            views += [torch.as_tensor(model(view)).float().softmax(1).cpu() for view in tta_views(xs, tta)]
        out.append(torch.stack(views))
    return torch.cat(out, 1)


def predict_probs(model: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor], *,
                  tta: str = "none", scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Softmax probabilities of preprocessed batches, averaged over mirrored views and scales."""
    return view_probs(model, batches, tta=tta, scales=scales).mean(0)


@torch.no_grad()
def predicted_classes(model: Callable, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The top-1 class of every image of ``batches`` (normalized input; ``model`` returns logits)."""
    return torch.cat([torch.as_tensor(model(x)).float().argmax(1).cpu() for x in batches])


def accuracy(model: Callable, batches: Iterable[torch.Tensor], labels: torch.Tensor) -> float:
    return (predicted_classes(model, batches) == labels).float().mean().item()


@dataclass(frozen=True)
class Agreement:
    images: int
    reference_acc: float
    candidate_acc: float
    #: Fraction of images where both predict the same class.
    top1_agreement: float

    @property
    def drop(self) -> float:
        return self.reference_acc - self.candidate_acc


def compare_on(reference: Callable, candidate: Callable, batches: Sequence[torch.Tensor],
               labels: torch.Tensor) -> Agreement:
    """Accuracy of two models (e.g. fp32 and its int8 export) on the same batches, and how often their
    top-1 classes agree."""
    r, c = predicted_classes(reference, batches), predicted_classes(candidate, batches)
    return Agreement(len(labels), (r == labels).float().mean().item(), (c == labels).float().mean().item(),
                     (r == c).float().mean().item())


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict:
    """Top-1/top-k accuracy, loss, balanced accuracy, macro-F1, calibration error (ECE, 15 bins),
    per-class precision/recall/F1/support and the confusion matrix (rows: true, columns: predicted)."""
    n = len(classes)
    k = min(5, n)
    probs = probs.float().clamp_min(1e-12)
    per_class = {
        "precision": multiclass_precision(probs, labels, n, average=None).tolist(),
        "recall": multiclass_recall(probs, labels, n, average=None).tolist(),
        "f1": multiclass_f1_score(probs, labels, n, average=None).tolist(),
        "support": torch.bincount(labels, minlength=n).tolist(),
    }
    return {
        "images": len(labels),
        "top1": multiclass_accuracy(probs, labels, n, average="micro").item(),
        f"top{k}": multiclass_accuracy(probs, labels, n, average="micro", top_k=k).item(),
        "loss": F.nll_loss(probs.log(), labels).item(),
        "balanced_accuracy": multiclass_accuracy(probs, labels, n, average="macro").item(),
        "macro_f1": multiclass_f1_score(probs, labels, n, average="macro").item(),
        "ece": multiclass_calibration_error(probs, labels, n, n_bins=15, norm="l1").item(),
        "per_class": [{"class": c, **{key: per_class[key][i] for key in per_class}} for i, c in enumerate(classes)],
        "confusion": multiclass_confusion_matrix(probs, labels, n).tolist(),
    }
