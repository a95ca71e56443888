"""``plainnet demo``: the zoo at a glance and a live re-parameterization check."""

from __future__ import annotations

import typer

from ._common import console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    model: str = typer.Option("repvgg_a0", "--model", "-m"),
) -> None:
    """Build a model, re-parameterize it and verify the fused form computes the same function."""
    import time

    import torch

    from .. import create_model, reparameterize, summarize, verify_equivalence

    torch.manual_seed(0)
    net = create_model(model, num_classes=10, small_input=True)
    # Random BN statistics, so the check is not trivially passed by identity-initialized BNs.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(8, 3, 32, 32)
    t0 = time.perf_counter()
    fused = reparameterize(net)
    eq = verify_equivalence(net, fused, x)
    before, after = summarize(net, 32), summarize(fused, 32)
    console.print(f"[bold]{model}[/] training form: {before.params:,} params, {before.gmacs:.3f} GMACs at 32 px")
    console.print(f"[bold]{model}[/] fused form:    {after.params:,} params, {after.gmacs:.3f} GMACs at 32 px")
    console.print(f"re-parameterized in {time.perf_counter() - t0:.2f} s; equivalent: {eq}")
