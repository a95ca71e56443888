"""``plainnet quantize``: int8 post-training quantization, with size, speed and accuracy vs fp32."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)


def quantize_command(
    model: Path = typer.Argument(..., help="Run directory or plainnet checkpoint."),
    output: Path = typer.Option(None, "--output", "-o", help="Output file (.onnx for ort, .pt2 for pt2e)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration images (default: the run's training images)."),
    method: str = typer.Option("ort", "--method", help="ort (onnxruntime QDQ) or pt2e (torchao + torch.compile)."),
    calibration: str = typer.Option("minmax", "--calibration", help="minmax, percentile or entropy (ort)."),
    calib_images: int = typer.Option(256, "--calib-images"),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor (naive)."),
    keep_ends_float: bool = typer.Option(False, "--keep-ends-float", help="Keep the first conv and the classifier in float."),
    dynamic_linear: bool = typer.Option(False, "--dynamic-linear", help="Dynamic int8 for fully connected layers."),
    reduce_range: bool = typer.Option(None, "--reduce-range/--full-range", help="7-bit weights, for x86 CPUs "
                                      "without VNNI (default: chosen for this CPU)."),
    eval_data: str = typer.Option(None, "--eval", help="Labelled images to compare on (default: held-out split)."),
) -> None:
    """Quantize MODEL to int8 and report size, latency (batch 1 and 16) and accuracy vs fp32."""
    from ..deploy.quantize import QuantOptions
    from ..deploy.workflows import quantize_model

    options = QuantOptions(per_channel=not per_tensor, calibration=calibration, keep_ends_float=keep_ends_float,
                           dynamic_linear=dynamic_linear, reduce_range=reduce_range)
    r = quantize_model(model, output, method=method, calib=calib, calib_images=calib_images, options=options,
                       eval_data=eval_data)
    a = r.agreement
    table = Table(title=f"int8 ({method}) vs fp32 on {r.data}")
    for col in ("", "fp32", "int8"):
        table.add_column(col, justify="right")
    table.add_row("file size", f"{r.fp32_bytes / 2**20:.1f} MiB (ONNX)", f"{r.int8_bytes / 2**20:.1f} MiB")
    table.add_row(f"top-1 accuracy ({a.images} images)", f"{a.reference_acc:.2%}", f"{a.candidate_acc:.2%} ({-a.drop:+.2%})")
    table.add_row("top-1 agreement with fp32", "", f"{a.top1_agreement:.2%}")
    for b in (1, 16):
        ms = {row.model: row.p50_ms for row in r.latency if row.batch == b}
        table.add_row(f"latency p50, batch {b}", f"{ms['fp32 eager']:.1f} ms eager / {ms['fp32 onnxruntime']:.1f} ms ORT",
                      f"{ms['int8']:.1f} ms ({ms['fp32 eager'] / ms['int8']:.2f}x eager)")
    console.print(table)
    console.print(f"int8 model: [bold]{r.output}[/] (report: {r.output.with_suffix('.json')})")
