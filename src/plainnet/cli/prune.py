"""``plainnet prune``: structured channel pruning (Torch-Pruning) with fine-tuning, or unstructured L1."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from ._common import console, quiet_lightning


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


def prune_command(
    model: Path = typer.Argument(..., help="Run directory or plainnet checkpoint (training form)."),
    ratio: float = typer.Option(0.5, "--ratio", "-r", help="Fraction of channels (or weights) to remove."),
    data: str = typer.Option(None, "--data", "-d", help="Images to fine-tune on (default: the run's data)."),
    finetune_epochs: int = typer.Option(5, "--finetune-epochs", "-e"),
    steps: int = typer.Option(1, "--steps", help="Iterative pruning: reach the ratio in this many steps, "
                              "fine-tuning after each."),
    unstructured: bool = typer.Option(False, "--unstructured", help="L1 unstructured pruning instead "
                                      "(zeros only: no speed-up or size gain by itself)."),
    name: str = typer.Option("", "--name"),
    runs_dir: str = typer.Option("runs", "--runs-dir"),
) -> None:
    """Prune MODEL's channels and fine-tune it; a pruned RepVGG is checked to still fuse exactly, and the
    checkpoint reloads without the original model."""
    import torch
    import yaml

    from .. import load_model, reparameterize, save_checkpoint, summarize, verify_equivalence
    from ..compress.prune import structured_prune, unstructured_prune, weight_sparsity
    from ..engine.train import train
    from ..evaluation.inference import load_inference_model, sample_images
    from ..models.weights import load_checkpoint
    from ._common import fail

    quiet_lightning()
    if not 0 < ratio < 1:
        fail(f"--ratio must be between 0 and 1, got {ratio}")
    loaded = load_inference_model(model)
    if loaded.form not in ("train",):
        fail("prune a training-form checkpoint (best.pt of a run), not a fused or exported model")
    base = load_model(loaded.source)
    size = loaded.preprocess.image_size
    meta = {k: v for k, v in load_checkpoint(loaded.source).items()
            if k in ("classes", "preprocess", "config")}
    before = summarize(reparameterize(base), size)
    run_name = name or f"{base.arch['name']}-{'l1' if unstructured else 'pruned'}{int(ratio * 100)}"
    out = Path(runs_dir) / run_name
    if unstructured:
        unstructured_prune(base, ratio)
        path = save_checkpoint(base, out / "best.pt", **meta)
        console.print(f"{weight_sparsity(base):.0%} of weights are now zero; shapes unchanged, so the model is "
                      f"no smaller and no faster by itself: [bold]{path}[/]")
        return
    example = sample_images(loaded, n=2, split="train")
    if len(example) == 0:
        example = torch.randn(2, 3, size, size)
    config = loaded.run_dir / "config.yaml" if loaded.run_dir else None
    if config is None and not data:
        fail("this checkpoint is not inside a run directory: pass --data DIR to fine-tune on")

    def tune(model_to_train, epochs: int, tag: str):
        overrides = {"train.epochs": str(epochs), "train.runs_dir": runs_dir, "train.name": tag,
                     "schedule.name": "cosine", "schedule.warmup_epochs": "0"}
        if data:
            overrides["data.path"] = data
        if config is not None:
            lr = float(yaml.safe_load(config.read_text())["optim"]["lr"])
            overrides["optim.lr"] = str(lr * 0.1)  # fine-tuning: a tenth of the original rate
        return train(config, overrides=overrides, model_instance=model_to_train)

    per_step = max(1, math.ceil(finetune_epochs / steps)) if finetune_epochs else 0
    structured_prune(base, ratio, example, steps=steps,
                     between_steps=(lambda i, m: tune(m, per_step, f"{run_name}-step{i + 1}")) if per_step else None)
    if finetune_epochs:
        result = tune(base, per_step, run_name)
        pruned = load_model(result.best_checkpoint)
        acc = result.final.get("val", {}).get("acc")
    else:
        pruned, acc = base.eval(), None
        save_checkpoint(pruned, out / "best.pt", **meta)
    eq = verify_equivalence(pruned, reparameterize(pruned), example)
    after = summarize(reparameterize(pruned), size)
    table = Table(title=f"structured pruning, {ratio:.0%} of channels", show_header=True)
    for col in ("", "before", "after"):
        table.add_column(col, justify="right")
    table.add_row("parameters (fused)", f"{before.params:,}", f"{after.params:,} ({after.params / before.params:.0%})")
    table.add_row(f"GMACs at {size} px", f"{before.gmacs:.3f}", f"{after.gmacs:.3f} ({after.macs / before.macs:.0%})")
    if acc is not None:
        table.add_row("held-out accuracy", "", f"{acc:.2%} after {finetune_epochs} fine-tuning epochs")
    console.print(table)
    console.print(f"re-parameterized pruned model equals its training form: {eq}")
    console.print(f"pruned checkpoint (reloads without the original): [bold]{out / 'best.pt'}[/]")
