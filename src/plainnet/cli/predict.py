"""``plainnet predict``: top-k classes for image files and folders, from any saved model form."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from ._render import console, err_console


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)


def predict_command(
    model: Path = typer.Argument(..., help="Run directory, checkpoint (training or fused) or ONNX file."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    top_k: int = typer.Option(3, "--top-k", "-k"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json (schema plainnet.predictions/v1) or csv."),
    batch_size: int = typer.Option(32, "--batch-size"),
    explain: Path = typer.Option(None, "--explain", help="Write a Grad-CAM heat-map per image into this folder."),
) -> None:
    """Predict classes. Exit code 0 when every file was predicted, 1 when some could not be read."""
    from ..evaluation.inference import load_inference_model
    from ..evaluation.predict import expand_inputs, predict_files, predictions_csv
    from ._app import fail

    if fmt not in ("table", "json", "csv"):
        fail(f"--format must be table, json or csv, not {fmt!r}")
    loaded = load_inference_model(model)
    paths = expand_inputs(inputs)
    if not paths:
        fail("no image files found in the given inputs")
    result = predict_files(loaded, paths, top_k=top_k, batch_size=batch_size, explain_dir=explain)
    records = result["predictions"]
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    elif fmt == "csv":
        sys.stdout.write(predictions_csv(result))
    else:
        table = Table(title=f"{len(records)} image(s), model {loaded.source} ({loaded.form})")
        table.add_column("image", overflow="fold")
        for i in range(result["top_k"]):
            table.add_column(f"#{i + 1}")
        for r in records:
            cells = ([f"{p['class']} {p['probability']:.1%}" for p in r["top_k"]] if r["ok"]
                     else [f"[red]error: {r['error']}[/]"] + [""] * (result["top_k"] - 1))
            table.add_row(r["path"], *cells)
        console.print(table)
    failed = [r for r in records if not r["ok"]]
    if failed:
        err_console.print(f"[yellow]{len(failed)} of {len(records)} file(s) could not be read[/]")
        raise typer.Exit(1)
