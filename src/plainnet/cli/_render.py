"""What the commands print: the rich consoles and the tables they share."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def write_report(run_dir) -> None:
    """The run's HTML report; a problem there is a warning, never a failed training run."""
    import logging

    from ..evaluation.report import build_report

    try:
        console.print(f"report: [bold]{build_report(run_dir)}[/]")
    except Exception as e:  # noqa: BLE001
        logging.getLogger("plainnet").warning("could not write report.html: %s", e)


def print_result(result) -> None:
    from rich.table import Table

    table = Table(title=f"run {result.run_dir}", show_header=False)
    table.add_column(justify="left", style="bold")
    table.add_column(justify="right")
    table.add_row("model", str(result.config.model.name))
    table.add_row("epochs run", str(result.epochs_run))
    table.add_row(f"best {result.config.train.monitor}", f"{result.best_metric:.4f} (epoch {result.best_epoch + 1})")
    for split, scores in result.final.items():
        for key, value in scores.items():
            if key not in ("images", "largest_class_share"):
                table.add_row(f"{split} {key}", f"{value:.4f}")
        table.add_row(f"{split} images", str(scores["images"]))
    table.add_row("time", f"{result.seconds / 60:.1f} min")
    table.add_row("best checkpoint", str(result.best_checkpoint))
    console.print(table)
