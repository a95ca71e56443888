"""Shared CLI plumbing: the rich consoles, logging set-up, and turning library errors into one line."""

from __future__ import annotations

import errno
import logging
import sys
import time

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


def os_error_line(e: OSError) -> str:
    """One line for a file-system failure: what happened, to which path, and what to do."""
    path = e.filename or "a file"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}: free some space, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path}: free some space, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.EROFS:
        return f"{path} is on a read-only file system: write elsewhere (--runs-dir, --out)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {path}: check its permissions, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.ENOENT:
        return f"{path}: no such file or folder (for an output, its parent folder must exist)"
    return f"{path}: {e.strerror or e}"


#: When the current command began (``time.perf_counter()``, set by :func:`run_app`): a time budget
#: (``plainnet train``, ``plainnet demo``) counts from here, the imports of torch and Lightning included.
STARTED = time.perf_counter()


def run_app(app: typer.Typer) -> None:
    """The one error boundary: library errors (:class:`PlainnetError`) and file-system failures become
    one line on stderr and exit code 2; anything else is a bug, reported in one line with exit code 1.
    ``--debug`` anywhere on the command line shows the traceback instead."""
    from ..errors import PlainnetError

    global STARTED
    STARTED = time.perf_counter()
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    setup_logging()
    try:
        app()
    except PlainnetError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {os_error_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request
        if debug:
            raise
        message = " ".join(str(e).split()) or "(no message)"
        err_console.print(f"[bold red]internal error:[/] {type(e).__name__}: {message[:300]} (rerun with "
                          "--debug for the traceback, and please report it)", highlight=False, soft_wrap=True)
        sys.exit(1)


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
            if key != "images":
                table.add_row(f"{split} {key}", f"{value:.4f}")
        table.add_row(f"{split} images", str(scores["images"]))
    table.add_row("time", f"{result.seconds / 60:.1f} min")
    table.add_row("best checkpoint", str(result.best_checkpoint))
    console.print(table)
