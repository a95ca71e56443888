"""Compare a quantized (or otherwise converted) model with its fp32 source on labelled images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Agreement", "compare_on"]


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


@torch.no_grad()
def compare_on(reference: Callable, candidate: Callable, batches, labels: torch.Tensor) -> Agreement:
    """Accuracy of both callables (normalized input -> logits) and how often they agree."""
    ref, cand = [], []
    for x in batches:
        ref.append(torch.as_tensor(reference(x)).float().argmax(1).cpu())
        cand.append(torch.as_tensor(candidate(x)).float().argmax(1).cpu())
    r, c = torch.cat(ref), torch.cat(cand)
    return Agreement(len(labels), (r == labels).float().mean().item(), (c == labels).float().mean().item(),
                     (r == c).float().mean().item())
