"""``plainnet draw MODEL``: the model's architecture as a layered figure (SVG, PDF or PNG)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("draw")(draw_command)


def draw_command(
    model: str = typer.Argument(..., help="A model name (see `plainnet models`), a run directory or a checkpoint."),
    output: Path = typer.Option(None, "--output", "-o", help="The figure: .svg, .pdf or .png [default: MODEL.svg]."),
    input_size: int = typer.Option(224, "--input-size", "-s"),
    form: str = typer.Option("train", "--form", help="train, deploy (re-parameterized) or both."),
    style: str = typer.Option("layers", "--style", help="layers (one box each) or blocks (one per stage)."),
    num_classes: int = typer.Option(1000, "--num-classes", "-n", help="For a model name."),
    small_input: bool = typer.Option(False, "--small-input", help="For a model name: the 32-64 px variant."),
) -> None:
    """Draw a model's architecture: boxes by layer, width by channels, height by resolution."""
    import torch

    from ..models import create_model, load_model
    from ..models.draw import draw

    if Path(model).exists():
        from ..evaluation.inference import resolve_checkpoint

        net, name = load_model(resolve_checkpoint(model)), Path(model).stem
    else:
        with torch.device("meta"):
            net = create_model(model, num_classes=num_classes, **({"small_input": True} if small_input else {}))
        name = model
    out = draw(net, output or Path(f"{name}.svg"), input_size=input_size, form=form, style=style)
    console.print(f"wrote {out}")
