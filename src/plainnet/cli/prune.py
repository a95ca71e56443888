"""``plainnet prune``: structured channel pruning (Torch-Pruning) with fine-tuning, or unstructured L1."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._app import quiet_lightning
from ._render import console


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


def prune_command(
    model: Path = typer.Argument(..., help="Run directory or plainnet checkpoint (training form)."),
    ratio: float = typer.Option(0.5, "--ratio", "-r", help="Fraction of channels (or weights) to remove."),
    data: str = typer.Option(None, "--data", "-d", help="Images to fine-tune on (default: the run's data)."),
    finetune_epochs: int = typer.Option(5, "--finetune-epochs", "-e"),
    steps: int = typer.Option(1, "--steps", help="Iterative pruning: reach the ratio in this many steps, "
                              "fine-tuning after each."),
    unstructured: bool = typer.Option(False, "--unstructured", help="L1 unstructured pruning instead "
                                      "(zeros only: no speed-up or size gain by itself)."),
    name: str = typer.Option("", "--name"),
    runs_dir: str = typer.Option("runs", "--runs-dir"),
) -> None:
    """Prune MODEL's channels and fine-tune it; a pruned RepVGG is checked to still fuse exactly, and the
    checkpoint reloads without the original model."""
    from ..compress.finetune import prune_and_finetune

    quiet_lightning()
    r = prune_and_finetune(model, ratio, data=data, finetune_epochs=finetune_epochs, steps=steps,
                           unstructured=unstructured, name=name, runs_dir=runs_dir)
    if unstructured:
        console.print(f"{r.sparsity:.0%} of weights are now zero; shapes unchanged, so the model is no smaller and "
                      f"no faster by itself: [bold]{r.checkpoint}[/]")
        return
    b, a = r.before, r.after
    table = Table(title=f"structured pruning, {ratio:.0%} of channels", show_header=True)
    for col in ("", "before", "after"):
        table.add_column(col, justify="right")
    table.add_row("parameters (fused)", f"{b.params:,}", f"{a.params:,} ({a.params / b.params:.0%})")
    table.add_row(f"GMACs at {r.image_size} px", f"{b.gmacs:.3f}", f"{a.gmacs:.3f} ({a.macs / b.macs:.0%})")
    if r.accuracy is not None:
        table.add_row("held-out accuracy", "", f"{r.accuracy:.2%} after {finetune_epochs} fine-tuning epochs")
    console.print(table)
    console.print(f"re-parameterized pruned model equals its training form: {r.equivalence}")
    console.print(f"pruned checkpoint (reloads without the original): [bold]{r.checkpoint}[/]")
