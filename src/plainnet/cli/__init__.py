"""The ``plainnet`` command line (typer + rich). The only layer that prints, exits or parses argv.

Each command lives in its own module and imports torch and friends inside the function, so
``plainnet --help`` starts without loading them.
"""

from __future__ import annotations

import typer

from . import (bench, compress, demo, distill, doctor, draw, evaluate, export, models, predict, prune, quantize,
               report, serve, summary, train)
from ._app import run_app

app = typer.Typer(
    name="plainnet",
    help="Plain convolutional image classifiers (VGG, RepVGG): build, inspect, train, deploy. "
    "Errors are one line; add --debug anywhere for the traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
for module in (models, summary, draw, train, evaluate, predict, report, export, quantize, bench, serve, prune, distill,
               compress, demo, doctor):
    module.register(app)


def main() -> None:
    run_app(app)
