"""``plainnet export``: fused model -> ONNX or torch.export (.pt2), checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    model: Path = typer.Argument(..., help="Run directory or plainnet checkpoint."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (.onnx or .pt2)."),
    fmt: str = typer.Option("", "--format", "-f", help="onnx or pt2 (default: from the file suffix)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to int8 (onnxruntime static QDQ, per-channel)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Allow any batch size."),
    check: Path = typer.Option(None, "--check", help="Images to check the export on (default: the run's held-out images)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration images for --int8 (default: the run's training images)."),
) -> None:
    """Re-parameterize, export, verify on real images, and print the graph's op histogram."""
    from ..deploy.workflows import export_model

    r = export_model(model, output, fmt, int8=int8, dynamic_batch=dynamic_batch, check=check, calib=calib)
    e = r.export
    console.print(f"[bold]{e.path if not r.int8_path else 'fp32 ONNX'}[/] ({e.format}, {e.size_bytes / 2**20:.1f} MiB): "
                  f"matches PyTorch on {r.checked} image(s): {e.parity}")
    if r.int8_path:
        console.print(f"[bold]{r.int8_path}[/] (int8, {r.int8_path.stat().st_size / 2**20:.1f} MiB): top-1 agreement "
                      f"with fp32 on {r.checked} images: {r.int8_agreement:.1%}")
    for row in r.runtimes:
        console.print(f"  {row['backend']}: {row['images_per_s']:.0f} images/s at batch {row['batch']}, top-1 agreement "
                      f"with PyTorch fp32 {row['agreement']:.1%}")
    best = next((row for row in r.runtimes if row["keeps_accuracy"]), None)
    if r.runtimes:
        console.print("[yellow]no runtime kept 99% top-1 agreement with PyTorch on these images[/]" if best is None
                      else f"fastest on this CPU keeping >= 99% agreement: [bold]{best['backend']}[/]")
    table = Table(title="operators in the exported graph")
    table.add_column("op")
    table.add_column("count", justify="right")
    for op, n in e.ops.most_common():
        table.add_row(op, str(n))
    console.print(table)
    if "BatchNormalization" in e.ops or "batch_norm" in " ".join(e.ops):
        console.print("[yellow]the graph still has BatchNorm: this model has no re-parameterizable blocks[/]")
