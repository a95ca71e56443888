"""``plainnet eval``: metrics, confusion matrix, misclassified images and Grad-CAM for a saved model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._render import console


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    model: Path = typer.Argument(..., help="Run directory, checkpoint (training or fused) or ONNX file."),
    data: str = typer.Option(None, "--data", "-d", help="Labelled images (default: the run's held-out split)."),
    split: str = typer.Option(None, "--split", help="val, test, or all (every image under --data). Default: "
                              "the held-out split of the model's own data, all images of other folders."),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none, hflip, flips."),
    scales: str = typer.Option("", "--scales", help="Multi-scale evaluation, e.g. 0.875,1,1.143."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/eval-SPLIT)."),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Score MODEL on labelled images: top-1/top-5, loss, per-class precision/recall/F1, balanced
    accuracy, macro-F1, calibration error, confusion matrix, misclassified images, Grad-CAM."""
    from ..evaluation.evaluate import evaluate
    from ..run_dir import EvalDir

    result = evaluate(model, data, split=split, tta=tta, scales=scales, out_dir=out, batch_size=batch_size)
    m = result.metrics
    top_k = next(k for k in m if k.startswith("top") and k != "top1")
    summary = Table(title=f"{m['data']}: {m['images']} images", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, key in (("top-1 accuracy", "top1"), (f"top-{top_k[3:]} accuracy", top_k),
                       ("balanced accuracy", "balanced_accuracy"), ("macro F1", "macro_f1")):
        summary.add_row(label, f"{m[key]:.2%}")
    summary.add_row("loss", f"{m['loss']:.4f}")
    summary.add_row("calibration error (ECE)", f"{m['ece']:.4f}")
    for name, v in m["test_time_augmentation"].items():
        summary.add_row(f"top-1 with {name}", f"{v['top1']:.2%} ({v['gain']:+.2%})")
    console.print(summary)
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for row in m["per_class"]:
        per_class.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                          str(row["support"]))
    console.print(per_class)
    console.print(f"written to [bold]{result.out_dir}[/]: "
                  + ", ".join(p.name for p in EvalDir(result.out_dir).written()))
