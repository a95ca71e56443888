"""``plainnet distill``: train a student with knowledge distillation from a trained teacher."""

from __future__ import annotations

import typer

from ._app import quiet_lightning


def register(app: typer.Typer) -> None:
    app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        distill_command)


def distill_command(
    ctx: typer.Context,
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher: run directory, plainnet checkpoint, or "
                                "NAME:imagenet (NAME fine-tuned from its ImageNet weights on this data first)."),
    student: str = typer.Option(..., "--student", "-s", help="Student model name, e.g. repvgg_a0 or vgg16_dws."),
    data: str = typer.Option(..., "--data", "-d"),
    epochs: int = typer.Option(0, "--epochs", "-e"),
    temperature: float = typer.Option(2.0, "--temperature", "-T"),
    alpha: float = typer.Option(0.7, "--alpha", help="Weight of the KL term (1 - alpha: cross-entropy)."),
    name: str = typer.Option("", "--name"),
) -> None:
    """Train a student with knowledge distillation: KL at temperature T to the teacher's outputs plus
    cross-entropy with the labels, through the usual training engine (--section.key overrides apply)."""
    from ..config import parse_override_args
    from ..engine.train import train
    from ._render import print_result, write_report

    quiet_lightning()
    overrides = {"data.path": data, "model.name": student, "distill.teacher": teacher,
                 "distill.temperature": str(temperature), "distill.alpha": str(alpha),
                 **parse_override_args(list(ctx.args))}
    if epochs:
        overrides["train.epochs"] = str(epochs)
    if name:
        overrides["train.name"] = name
    result = train(overrides=overrides)
    print_result(result)
    write_report(result.run_dir)
