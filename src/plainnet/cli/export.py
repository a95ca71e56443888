"""``plainnet export``: fused model -> ONNX or torch.export (.pt2), checked against PyTorch."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.table import Table

from ._common import console


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_metadata(loaded) -> dict:
    return {"classes": loaded.classes, "preprocess": loaded.preprocess.to_dict(), "config": loaded.config,
            "source": str(loaded.source)}


def check_inputs(loaded, folder: Path | None, n: int, split: str):
    """Real images for checks/calibration, or random ones (with a warning) when none can be found."""
    import logging

    import torch

    from ..evaluation.inference import sample_images

    images = sample_images(loaded, folder, n=n, split=split)
    if len(images) == 0:
        logging.getLogger("plainnet").warning("no real images found (pass --check/--calib DIR): using random input")
        size = loaded.preprocess.image_size
        images = torch.randn(n, 3, size, size)
    return images


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
    from ..deploy.export import export_onnx, export_pt2
    from ..evaluation.inference import load_inference_model
    from ._common import fail

    fmt = fmt or output.suffix.lstrip(".").lower()
    if fmt not in ("onnx", "pt2"):
        fail(f"--format must be onnx or pt2 (or use a .onnx/.pt2 file name), not {fmt!r}")
    if int8 and fmt != "onnx":
        fail("--int8 exports ONNX; for PyTorch-native int8 use: plainnet quantize MODEL --method pt2e")
    loaded = load_inference_model(model)
    if loaded.module is None or loaded.form == "pt2":
        fail(f"{model} is already an export: give the run directory or checkpoint")
    x = check_inputs(loaded, check, 16, "val")
    meta = export_metadata(loaded)
    if fmt == "pt2":
        result = export_pt2(loaded.module, output, x, metadata=meta, dynamic_batch=dynamic_batch)
    else:
        target = Path(tempfile.mkdtemp(prefix="plainnet-")) / "fp32.onnx" if int8 else output
        result = export_onnx(loaded.module, target, x, metadata=meta, dynamic_batch=dynamic_batch or int8)
    console.print(f"[bold]{result.path}[/] ({result.format}, {result.size_bytes / 2**20:.1f} MiB): matches PyTorch "
                  f"on {len(x)} image(s): {result.parity}")
    if int8:
        from ..deploy.quantize import quantize_onnx
        from ..evaluation.inference import load_inference_model as load

        calibration = check_inputs(loaded, calib, 128, "train")
        quantize_onnx(result.path, output, [b.numpy() for b in calibration.split(16)])
        q = load(output)
        agree = (q(x).argmax(1) == loaded(x).argmax(1)).float().mean().item()
        console.print(f"[bold]{output}[/] (int8, {output.stat().st_size / 2**20:.1f} MiB): top-1 agreement with "
                      f"fp32 on {len(x)} images: {agree:.1%}")
    if fmt == "onnx":
        _report_runtimes(loaded, output, check)
    table = Table(title="operators in the exported graph")
    table.add_column("op")
    table.add_column("count", justify="right")
    for op, n in result.ops.most_common():
        table.add_row(op, str(n))
    console.print(table)
    if "BatchNormalization" in result.ops or "batch_norm" in " ".join(result.ops):
        console.print("[yellow]the graph still has BatchNorm: this model has no re-parameterizable blocks[/]")


def _report_runtimes(loaded, output: Path, check: Path | None) -> None:
    """Which runtime runs the exported file fastest on this CPU while keeping the PyTorch model's answers."""
    from ..deploy.bench import compare_runtimes

    images = check_inputs(loaded, check, 64, "val")
    rows = compare_runtimes(output, images, loaded(images))
    for r in rows:
        console.print(f"  {r['backend']}: {r['images_per_s']:.0f} images/s at batch {r['batch']}, top-1 agreement with "
                      f"PyTorch fp32 {r['agreement']:.1%}")
    best = next((r for r in rows if r["keeps_accuracy"]), None)
    if best is None:
        console.print("[yellow]no runtime kept 99% top-1 agreement with PyTorch on these images[/]")
    else:
        console.print(f"fastest on this CPU keeping >= 99% agreement: [bold]{best['backend']}[/]")
