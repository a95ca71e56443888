"""``plainnet doctor``: this machine's CPU, measured convolution speeds, what plainnet will use and why."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def doctor_command(
    seconds: float = typer.Option(0.3, "--seconds", help="Timing per form and round (3 interleaved rounds)."),
) -> None:
    """Measure this machine: fp32 / bf16 / int8 convolution speed, the choices they lead to, versions."""
    from ..doctor import BATCH, CHANNELS, SIDE, diagnose

    start = time.perf_counter()
    d = diagnose(seconds=seconds)
    console.print(f"[bold]CPU[/]: {d.cpu}; torch uses {d.threads} threads")
    speeds = Table(title=f"3x3 convolution {CHANNELS}->{CHANNELS} channels, {SIDE}x{SIDE}, batch {BATCH} "
                         "(median of interleaved rounds)")
    for col in ("form", "GFLOP/s", "ms per batch"):
        speeds.add_column(col, justify="left" if col == "form" else "right")
    for s in d.speeds:
        speeds.add_row(s.name, f"{s.gflops:.1f}", f"{s.ms:.2f}")
    console.print(speeds)
    choices = Table(title="what plainnet uses here")
    for col in ("", "choice", "why"):
        choices.add_column(col)
    for what, choice, why in d.choices:
        choices.add_row(what, choice, why)
    console.print(choices)
    console.print("[bold]versions[/]: " + ", ".join(f"{k} {v}" for k, v in d.versions))
    console.print(f"(measured in {time.perf_counter() - start:.1f} s)")
