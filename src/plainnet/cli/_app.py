"""The commands' process plumbing: logging set-up, and the one error boundary that turns library errors
into one line and an exit code."""

from __future__ import annotations

import logging
import sys
import time

import typer
from rich.logging import RichHandler

from ._render import err_console


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


def process_started() -> float:
    """When this process started, as a ``time.perf_counter()`` value (Linux: from /proc; elsewhere now),
    so that a time budget also counts the interpreter's start and the imports before plainnet's code."""
    import os

    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, starttime, after the name
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        age = 0.0
    return time.perf_counter() - min(max(age, 0.0), 60.0)


#: When the current command began (the process's start, set by :func:`run_app`): a time budget
#: (``plainnet train``, ``plainnet demo``) counts from here, the imports of torch and Lightning included.
STARTED = time.perf_counter()


def run_app(app: typer.Typer) -> None:
    """The one error boundary: library errors (:class:`PlainnetError`) and file-system failures become
    one line on stderr and exit code 2; anything else is a bug, reported in one line with exit code 1.
    ``--debug`` anywhere on the command line shows the traceback instead."""
    from ..errors import describe_error, is_user_error

    global STARTED
    STARTED = process_started()
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    setup_logging()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the boundary: one line, the traceback on request
        if debug:
            raise
        if is_user_error(e):
            err_console.print(f"[bold red]error:[/] {describe_error(e)}", highlight=False, soft_wrap=True)
            sys.exit(2)
        err_console.print(f"[bold red]internal error:[/] {describe_error(e)} (rerun with --debug for the "
                          "traceback, and please report it)", highlight=False, soft_wrap=True)
        sys.exit(1)
