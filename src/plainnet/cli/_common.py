"""Shared CLI plumbing: the rich consoles, logging set-up, and turning library errors into one line."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("plainnet").setLevel(logging.DEBUG if verbose else logging.INFO)


def quiet_lightning(verbose: bool = False) -> None:
    """Keep Lightning's start-up chatter (device tips, AMP notices) out of the way unless asked, and send
    what remains through plainnet's own log handler (Lightning installs a second one at import)."""
    import warnings

    import lightning.pytorch  # noqa: F401  (it configures its loggers on import; adjust them after)

    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    if not verbose:
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*litlogger.*")


def fail(message: str, code: int = 2) -> None:
    """Print one readable line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_app(app: typer.Typer) -> None:
    from ..errors import PlainnetError

    setup_logging()
    try:
        app()
    except PlainnetError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"
