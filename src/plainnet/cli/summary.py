"""``plainnet summary MODEL``: parameters, MACs, activation memory and a per-layer table."""

from __future__ import annotations

import typer
from rich.table import Table

from ._render import console, human_bytes


def register(app: typer.Typer) -> None:
    app.command("summary")(summary_command)


def summary_command(
    model: str = typer.Argument(..., help="A model name (see `plainnet models`)."),
    input_size: int = typer.Option(224, "--input-size", "-s"),
    num_classes: int = typer.Option(1000, "--num-classes", "-n"),
    deploy: bool = typer.Option(False, "--deploy", help="Summarize the fused inference form."),
    small_input: bool = typer.Option(False, "--small-input", help="The 32-64 px variant (less downsampling)."),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Show the per-layer table."),
) -> None:
    """Inspect one model: totals and one row per layer."""
    import torch

    from ..models import create_model, summarize

    with torch.device("meta"):
        net = create_model(model, num_classes=num_classes, deploy=deploy, **({"small_input": True} if small_input else {}))
    s = summarize(net, input_size)
    if layers:
        table = Table(title=f"{model} ({'deploy' if deploy else 'train'} form) at {input_size}x{input_size}")
        for col, justify in [("layer", "left"), ("type", "left"), ("output", "right"),
                             ("params", "right"), ("MMACs", "right")]:
            table.add_column(col, justify=justify)
        for row in s.layers:
            if row.params or row.macs:
                table.add_row(row.name, row.kind, "x".join(map(str, row.output_shape[1:])),
                              f"{row.params:,}", f"{row.macs / 1e6:,.1f}")
        console.print(table)
    console.print(
        f"[bold]{model}[/]: {s.params:,} parameters ({human_bytes(s.param_bytes)}), "
        f"{s.gmacs:.3f} GMACs, activations {human_bytes(s.activation_bytes)} per image "
        f"at {input_size}x{input_size}"
    )
