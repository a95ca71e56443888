"""Measure, before training, how fast this machine trains the chosen model (``train`` with ``auto``).

The automatic recipe used to estimate training speed from a constant measured on one CPU; CPUs differ
by several times (AVX-512 with native bf16 against AVX2, where bf16 is emulated and slower than fp32,
and where channels_last is not always the faster layout). A few seconds of real training steps at the
chosen model, size and batch settle the precision, the memory layout and the number of epochs that fit
the time budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["measure_train_rates"]


def measure_train_rates(name: str, output_stride: int | None, image_size: int, num_classes: int, batch: int,
                        precisions: tuple[str, ...], layouts: tuple[bool, ...] = (True,),
                        seconds: float = 1.0, train_form: str = "standard") -> dict[tuple[str, bool], float]:
    """Training images/s (forward, backward, SGD step) for each CPU precision in ``precisions`` ("fp32",
    "bf16") and memory layout in ``layouts`` (``True``: channels_last), keyed ``(precision,
    channels_last)``: one warm-up step each, then three interleaved rounds of about ``seconds / 3`` per
    combination (at least one step each); the median step time of each. ``train_form``: RepVGG's
    training form (the online form trains faster than the standard one)."""
    from ..deploy.bench import Runner, run_bench
    from ..models import create_model

    kwargs = {} if output_stride is None else {"output_stride": output_stride}
    if train_form != "standard":
        kwargs["train_form"] = train_form
    model = create_model(name, num_classes=num_classes, **kwargs).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    # The run's batch, up to the pixels of 16 images at 96 px (which keeps an emulated-bf16 step short);
    # at least two images for BN. Small images need their real batch: per-step overheads dominate them.
    b = max(2, min(batch, int(16 * (96 / image_size) ** 2)))
    x = torch.randn(b, 3, image_size, image_size)
    y = torch.randint(num_classes, (b,))

    def step(precision: str, channels_last: bool) -> None:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x.contiguous(memory_format=layout)).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    combos = [(p, cl) for p in precisions for cl in layouts]
    for p, cl in combos:
        step(p, cl)  # warm-up: oneDNN builds its kernels for these shapes
    runners = [Runner(p, "eager", str(cl), b, lambda p=p, cl=cl: step(p, cl), 0, 0) for p, cl in combos]
    rows = run_bench(runners, rounds=3, min_seconds=seconds / 3)
    return {(r.model, r.dtype == "True"): r.images_per_s for r in rows}
