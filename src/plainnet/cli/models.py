"""``plainnet models [PATTERN]``: every registered model with its size and cost."""

from __future__ import annotations

import typer
from rich.table import Table

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)


def models_command(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'repvgg_b*'."),
    input_size: int = typer.Option(224, "--input-size", "-s", help="Square input size for MACs."),
    num_classes: int = typer.Option(1000, "--num-classes", "-n"),
    pretrained: bool = typer.Option(False, "--pretrained", help="Only the models with published ImageNet weights, "
                                    "and where each one's come from."),
) -> None:
    """List models: parameters in training and deploy form, and deploy-form GMACs."""
    import torch

    from ..models import create_model, list_models, model_entry, summarize

    names = list_models(pattern)
    if not names:
        from ._app import fail

        fail(f"no model matches {pattern!r}; try `plainnet models` for the full list")
    if pretrained:
        return _pretrained_table(names)
    table = Table(title=f"plainnet models ({input_size}x{input_size}, {num_classes} classes)")
    for col, justify in [("model", "left"), ("family", "left"), ("params (train)", "right"),
                         ("params (deploy)", "right"), ("GMACs (deploy)", "right")]:
        table.add_column(col, justify=justify)
    for name in names:
        with torch.device("meta"):  # structure only: no memory, no compute
            train = create_model(name, num_classes=num_classes)
            fused = create_model(name, num_classes=num_classes, deploy=True)
        s_train, s_fused = summarize(train, input_size), summarize(fused, input_size)
        entry = model_entry(name)
        table.add_row(name, entry.family, f"{s_train.params:,}", f"{s_fused.params:,}",
                      f"{s_fused.gmacs:.3f}")
    console.print(table)


def _pretrained_table(names: list[str]) -> None:
    from ..models.pretrained import published_names, weight_source

    table = Table(title="published ImageNet weights (create_model(name, pretrained=True), "
                        "plainnet train --model.pretrained imagenet)")
    for col in ("model", "source", "file", "input", "how it is fetched"):
        table.add_column(col, overflow="fold")
    how = {"hf": "huggingface_hub (its cache; HF_HUB_OFFLINE)", "url": "torch hub (TORCH_HOME; sha256 checked)",
           "manual": "by hand into the torch hub cache"}
    for name in (n for n in names if n in published_names()):
        source = weight_source(name)
        table.add_row(name, source.page, source.filename,
                      f"{source.preprocess['image_size']} px, crop {source.preprocess['crop_ratio']:g}", how[source.kind])
    table.caption = "and any torchvision.NAME (its weights enum) or timm.NAME (timm's pretrained=True)"
    console.print(table)
