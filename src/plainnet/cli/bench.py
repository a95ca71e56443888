"""``plainnet bench``: inference speed of models, forms and backends on this machine."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._render import console, err_console


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def bench_command(
    models: list[str] = typer.Argument(..., help="plainnet names (RepVGG fused; NAME:train for the training "
                                       "form), torchvision.NAME, timm.NAME, or checkpoints."),
    batch: str = typer.Option("1,16", "--batch", "-b"),
    size: int = typer.Option(224, "--size", "-s"),
    backend: str = typer.Option("eager", "--backend", help="eager, compile, onnxruntime, openvino (comma-separated)."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, bf16, fp16 (CUDA), int8 (comma-separated)."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads (default: torch's)."),
    rounds: int = typer.Option(5, "--rounds", help="Interleaved rounds."),
    seconds: float = typer.Option(0.5, "--seconds", help="Time per runner per round."),
    refs: bool = typer.Option(False, "--refs", help="Add torchvision resnet18/34/50 and vgg16 as references."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for bench.csv/json/png (default bench-<time>)."),
) -> None:
    """Warm-up, interleaved rounds, p50/p90 latency, throughput, params, MACs and achieved GFLOP/s."""
    import torch

    from ..deploy.bench import REFERENCES, bench_models, fastest

    if threads:
        torch.set_num_threads(threads)
    specs = list(models) + ([r for r in REFERENCES if r not in models] if refs else [])
    rows, skipped, out = bench_models(specs, batches=[int(b) for b in _csv_list(batch)], size=size,
                                      backends=_csv_list(backend), dtypes=_csv_list(dtype), device=device,
                                      rounds=rounds, seconds=seconds, out=out)
    for note in skipped:
        err_console.print(f"[yellow]skipped[/] {note}")
    table = Table(title=f"{size}x{size}, {torch.get_num_threads()} threads, {device}, {rounds} interleaved rounds")
    for col in ("model", "backend", "dtype", "batch", "p50 ms", "p90 ms", "img/s", "GFLOP/s", "params", "GMACs"):
        table.add_column(col, justify="left" if col in ("model", "backend", "dtype") else "right")
    for r in sorted(rows, key=lambda r: (r.batch, -r.images_per_s)):
        table.add_row(r.model, r.backend, r.dtype, str(r.batch), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                      f"{r.images_per_s:.1f}", f"{r.gflops:.0f}", f"{r.params / 1e6:.1f}M", f"{r.macs / 1e9:.2f}")
    console.print(table)
    for top, slow in fastest(rows):
        console.print(f"fastest for {top.model} at batch {top.batch}: [bold]{top.backend} {top.dtype}[/] "
                      f"({top.images_per_s / slow.images_per_s:.2f}x the slowest, {slow.backend} {slow.dtype})")
    console.print(f"written to [bold]{out}[/]: bench.csv, bench.json, bench.png")
