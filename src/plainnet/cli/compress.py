"""``plainnet compress``: lightweighting methods applied to one trained model, measured side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._app import quiet_lightning
from ._render import console


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_command)


def compress_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    data: str = typer.Option(None, "--data", "-d", help="Images to fine-tune and score on (default: the run's)."),
    methods: str = typer.Option("", "--methods", "-m",
                                help="Comma-separated: prune:R, unstructured:R, int8, prune:R+int8, distill[:NAME], "
                                "slim-head, gap-head, dws (VGG). Default: all that apply."),
    finetune_epochs: int = typer.Option(5, "--finetune-epochs", "-e"),
    distill_epochs: int = typer.Option(0, "--distill-epochs"),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/compress)."),
) -> None:
    """Apply lightweighting methods to a trained model and compare them in one measured table
    (compression.md/.csv/.json, compression.png), ending with a verdict."""
    from ..compress.compare import DEFAULT_METHODS, compress

    quiet_lightning()
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip()) or DEFAULT_METHODS
    result = compress(run_dir, methods=chosen, finetune_epochs=finetune_epochs,
                      distill_epochs=distill_epochs or None, out_dir=out, data=data)
    table = Table(title=f"compression of {run_dir}")
    for col in ("method", "params", "GMACs", "MiB", "b1 ms", "b16 ms", "accuracy", "change", "train s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in result.rows:
        table.add_row(r.method, f"{r.params / 1e6:.2f}M", f"{r.macs / 1e9:.3f}", f"{r.file_bytes / 2**20:.1f}",
                      f"{r.latency_ms.get(1, 0):.2f}", f"{r.latency_ms.get(16, 0):.1f}", f"{r.accuracy:.2%}",
                      f"{r.accuracy - result.base_accuracy:+.2%}", f"{r.train_seconds:.0f}")
    console.print(table)
    for note in result.skipped:
        console.print(f"[yellow]skipped[/] {note}")
    console.print(f"[bold]{result.verdict}[/]")
    console.print(f"written to [bold]{result.out_dir}[/]: compression.md, compression.csv, compression.json, "
                  "compression.png")
