"""``plainnet report RUN_DIR``: (re)build the run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


def report_command(run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>).")) -> None:
    """Write RUN_DIR/report.html: config, data, curves, evaluation, Grad-CAM, model, environment."""
    from ..evaluation.report import build_report

    path = build_report(run_dir)
    console.print(f"report: [bold]{path}[/] ({path.stat().st_size / 2**10:.0f} KiB, self-contained)")
