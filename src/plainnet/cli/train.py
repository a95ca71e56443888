"""``plainnet train``: train a classifier on a folder of images (or resume a run)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ._app import quiet_lightning
from ._render import print_result, write_report


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(train_command)


def train_command(
    ctx: typer.Context,
    data: str = typer.Option("", "--data", "-d", help="Image folder (one sub-folder per class), train/+val/ "
                             "folders, CIFAR-10 python batches, or 'digits'."),
    model: str = typer.Option("", "--model", "-m", help="plainnet model, torchvision.NAME or timm.NAME "
                              "(default: picked for the data and machine)."),
    epochs: int = typer.Option(0, "--epochs", "-e", help="Epochs (default on a CPU: as many as fit "
                                "--train.budget_minutes, 5 by default, for the whole command)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML recipe (sections data, augment, model, "
                                "optim, schedule, train, distill)."),
    resume: Path = typer.Option(None, "--resume", help="Continue runs/<name> from its last checkpoint."),
    devices: int = typer.Option(0, "--devices", help="Processes (DDP) on this machine: CPUs with gloo, "
                                "GPUs with NCCL."),
    name: str = typer.Option("", "--name", help="Run name (directory under --runs-dir)."),
    runs_dir: str = typer.Option("", "--runs-dir", help="Parent of run directories (default: runs)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train with an automatic recipe; any option can be overridden as --section.key VALUE
    (e.g. --optim.lr 0.05 --train.patience 5 --augment.preset rot)."""
    from ..config import parse_override_args
    from ..engine.train import train

    quiet_lightning(verbose)
    overrides = parse_override_args(list(ctx.args))
    for flag, key, value in ((data, "data.path", data), (model, "model.name", model),
                             (epochs, "train.epochs", str(epochs)), (devices, "train.devices", str(devices)),
                             (name, "train.name", name), (runs_dir, "train.runs_dir", runs_dir)):
        if flag:
            overrides[key] = value
    if resume is None and not data and not config:
        from ._app import fail

        fail("give --data DIR (or --config FILE, or --resume RUN_DIR)")
    from . import _app

    result = train(config, overrides=overrides, resume=resume, started=_app.STARTED)
    if int(os.environ.get("RANK", "0")) == 0:
        print_result(result)
        write_report(result.run_dir)
        if result.status != "finished":
            from ._app import fail

            fail(result.problem, code=3)
