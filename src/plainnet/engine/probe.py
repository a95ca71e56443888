"""Measure, before training, how fast this machine trains the chosen model (``train`` with ``auto``).

The automatic recipe used to estimate training speed from a constant measured on one CPU; CPUs differ
by several times (AVX-512 with native bf16 against AVX2, where bf16 is emulated and slower than fp32).
A few seconds of real training steps at the chosen model, size and batch settle both the precision and
the number of epochs that fit the time budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["measure_train_rates"]


def measure_train_rates(name: str, output_stride: int | None, image_size: int, num_classes: int, batch: int,
                        precisions: tuple[str, ...], seconds: float = 1.0) -> dict[str, float]:
    """Training images/s (forward, backward, SGD step; channels_last) for each CPU precision in
    ``precisions`` ("fp32", "bf16"): one warm-up step each, then three interleaved rounds of about
    ``seconds / 3`` per precision (at least one step each); the median step time per precision."""
    from ..deploy.bench import Runner, run_bench
    from ..models import create_model

    kwargs = {} if output_stride is None else {"output_stride": output_stride}
    model = create_model(name, num_classes=num_classes, **kwargs).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    b = max(2, min(batch, 32))  # BN needs two images; 32 keeps an emulated-bf16 step short
    x = torch.randn(b, 3, image_size, image_size).to(memory_format=torch.channels_last)
    y = torch.randint(num_classes, (b,))

    def step(precision: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for p in precisions:
        step(p)  # warm-up: oneDNN builds its kernels for these shapes
    runners = [Runner(p, "eager", p, b, lambda p=p: step(p), 0, 0) for p in precisions]
    return {r.dtype: r.images_per_s for r in run_bench(runners, rounds=3, min_seconds=seconds / 3)}
