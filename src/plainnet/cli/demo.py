"""``plainnet demo``: train on the bundled handwritten digits, evaluate, re-parameterize and verify.

Runs offline on scikit-learn's 1,797 real 8x8 digit images and leaves an ordinary run directory.
"""

from __future__ import annotations

import typer

from ._app import quiet_lightning
from ._render import console, write_report


def register(app: typer.Typer) -> None:
    app.command("demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(demo_command)


def demo_command(
    ctx: typer.Context,
    model: str = typer.Option("repvgg_a0", "--model", "-m"),
    epochs: int = typer.Option(0, "--epochs", "-e", help="Epochs (default: as many as fit the demo's one-minute "
                               "training budget, --train.budget_minutes)."),
    runs_dir: str = typer.Option("runs", "--runs-dir"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train MODEL on the bundled digits, score the held-out 20%, fuse it and check the fused model
    (training options can be overridden as with train: --section.key VALUE)."""
    from rich.table import Table

    from ..config import parse_override_args
    from ..engine.demo import run_demo
    from ..run_dir import RunDir
    from . import _app

    quiet_lightning(verbose)
    console.rule("[bold]train on scikit-learn's bundled digits (1,797 real 8x8 images, 20% held out), then "
                 "re-parameterize the best weights and verify them on the held-out images")
    r = run_demo(model, epochs=epochs, runs_dir=runs_dir, overrides=parse_override_args(list(ctx.args)),
                 started=_app.STARTED)
    if r.train.status != "finished":
        _app.fail(r.train.problem, code=3)
    table = Table(title=f"plainnet demo: {model} on digits", show_header=True)
    for col in ("", "training form", "fused (deploy) form"):
        table.add_column(col, justify="right")
    table.add_row("held-out accuracy", f"{r.scores['acc']:.2%}", f"{r.fused_scores['acc']:.2%}")
    table.add_row("balanced accuracy", f"{r.scores['balanced_acc']:.2%}", f"{r.fused_scores['balanced_acc']:.2%}")
    table.add_row("parameters", f"{r.before.params:,}", f"{r.after.params:,}")
    table.add_row(f"MMACs per {r.image_size} px image", f"{r.before.macs / 1e6:.1f}", f"{r.after.macs / 1e6:.1f}")
    console.print(table)
    console.print(f"fused output equals training form: {r.equivalence}")
    write_report(r.train.run_dir)
    run = RunDir(r.train.run_dir)
    console.print(f"run directory: [bold]{run.path}[/] (" + ", ".join(
        p.name for p in (run.report, run.curves, run.metrics_file, run.best, run.best_fused)) + ")")
