"""The training clock: learning rate and image size as functions of *progress*, re-fittable mid-run.

Progress runs from 0 at the first optimizer step to 1 at the last planned one. Every schedule (one-cycle,
cosine, constant, each with its warm-up) and the progressive-resizing image size read it, so a time budget
that finds the run slower (or faster) than planned can change the number of steps left
(:meth:`Schedule.refit`): the remaining part of every curve is squeezed (or stretched) onto the new number
of steps, and the run still warms up, anneals and ends at the full image size -- instead of stopping in
the middle of a high learning rate.

The :class:`Schedule` is the ``lr_lambda`` of a ``torch.optim.lr_scheduler.LambdaLR``; its attributes are
saved in the scheduler's state, so ``--resume`` continues on the re-fitted clock.
"""

from __future__ import annotations

import math

__all__ = ["Schedule", "train_size", "step_cost", "mean_cost"]

#: Progressive resizing reaches the full image size at this progress, and trains at it until the end.
FULL_SIZE_AT = 0.75
#: The part of a training step's time that does not shrink with the image (optimizer step, per-layer
#: overheads, augmenting at the stored size). Measured: RepVGG-A0 on potato, 2-core Zen 4, bf16, batch 64:
#: an epoch at 64 px took 0.60x the time of one at 96 px, where pixels alone would give 0.44x.
FIXED_COST = 0.3


def _cos(a: float, b: float, t: float) -> float:
    """From ``a`` (t=0) to ``b`` (t=1) along half a cosine."""
    return b + (a - b) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2


class Schedule:
    """Learning-rate factor (of the peak) for optimizer step ``step``.

    Args:
        name: ``onecycle`` (cosine rise from 1/25 of the peak over the warm-up, then cosine decay),
            ``cosine`` (linear warm-up from 1%, then cosine decay) or ``constant`` (linear warm-up).
        warmup: the warm-up's share of training (0..1).
        min_ratio: the final rate as a fraction of the peak.
        total: planned optimizer steps.
    """

    def __init__(self, name: str, warmup: float, min_ratio: float, total: int) -> None:
        if name not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"unknown schedule {name!r}")
        self.name, self.warmup, self.min_ratio = name, min(max(warmup, 0.0), 0.5), min_ratio
        self.total, self.start_step, self.start_progress = max(int(total), 1), 0, 0.0

    def progress(self, step: int) -> float:
        span = max(self.total - self.start_step, 1)
        return min(1.0, self.start_progress + (step - self.start_step) / span * (1 - self.start_progress))

    def refit(self, step: int, total: int) -> None:
        """From ``step`` on, spread the rest of the schedule over ``total - step`` steps."""
        self.start_progress, self.start_step = self.progress(step), step
        self.total = max(int(total), step + 1)

    def __call__(self, step: int) -> float:
        p, w = self.progress(step), self.warmup
        if p < w:
            if self.name == "onecycle":
                return _cos(1 / 25, 1.0, p / w)
            return 0.01 + 0.99 * p / w
        if self.name == "constant":
            return 1.0
        return _cos(1.0, self.min_ratio, (p - w) / max(1 - w, 1e-9))


def train_size(progress: float, start: int, full: int) -> int:
    """Progressive resizing: the training image side at ``progress``, from ``start`` pixels growing
    linearly to ``full`` at :data:`FULL_SIZE_AT`, in steps of 8 pixels (``start == full``: off)."""
    t = progress / FULL_SIZE_AT
    if start >= full or t >= 1:
        return full
    return min(full, int(round((start + (full - start) * t) / 8)) * 8)


def step_cost(size: int, full: int) -> float:
    """Time of a training step at ``size`` pixels relative to one at ``full``."""
    return FIXED_COST + (1 - FIXED_COST) * (size / full) ** 2


def mean_cost(start: int, full: int, reference: int | None = None, points: int = 200) -> float:
    """Average time of a training step over a run resized from ``start`` to ``full``, relative to one at
    ``reference`` pixels (default: the full size)."""
    reference = reference or full
    return sum(step_cost(train_size((i + 0.5) / points, start, full), reference) for i in range(points)) / points
