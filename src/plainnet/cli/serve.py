"""``plainnet serve``: the model behind an HTTP API and a web page (FastAPI + uvicorn)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from ._render import err_console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    model: Path = typer.Argument(..., help="Run directory, checkpoint (training or fused), .pt2 or ONNX file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port"),
    backend: str = typer.Option("auto", "--backend", help="auto (the file's own), torch or onnxruntime."),
    max_batch: int = typer.Option(32, "--max-batch", help="Images gathered into one model call."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a batch waits for more images."),
    workers: int = typer.Option(1, "--workers", help="Server processes, each with its own model."),
) -> None:
    """Serve predictions: POST /v1/predict, GET /v1/model, /healthz, /readyz, /metrics, and a page at /."""
    import uvicorn

    from ..deploy.serve import ServeOptions, create_app, load_for_serving
    from ._app import fail

    if max_batch < 1 or max_wait_ms < 0 or workers < 1:
        fail("--max-batch and --workers must be at least 1, --max-wait-ms at least 0")
    options = ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms)
    loaded = load_for_serving(model, backend)  # fails here, in one line, before anything listens
    err_console.print(f"serving {loaded.source} ({', '.join(loaded.classes)}) on http://{host}:{port}/")
    if workers == 1:
        uvicorn.run(create_app(loaded, options), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=30)
        return
    os.environ["PLAINNET_SERVE"] = json.dumps({"model": str(model), "backend": backend,
                                               "options": options.__dict__})
    uvicorn.run("plainnet.deploy.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", timeout_graceful_shutdown=30)
