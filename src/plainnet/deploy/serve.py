"""``plainnet serve``: predictions over HTTP, with dynamic batching (FastAPI + uvicorn).

The app answers ``POST /v1/predict`` (multipart ``file`` fields, repeatable, or JSON with base64
images) in the ``plainnet.predictions/v1`` schema of ``plainnet predict``, through the same
:class:`~plainnet.evaluation.inference.InferenceModel` and the same image decoding, so an answer equals
``plainnet predict`` on the same file. Concurrent requests' images are gathered into one batch (up to
``max_batch`` images or ``max_wait_ms``), run once in a worker thread (the event loop never blocks),
and answered individually. FastAPI has no batching of its own; the queue below is the small piece
that adds it.

Limits: the request body (checked while it is received), images per request, pixels per image (read
from the header, before decoding) and the smallest side. Every refusal is a 4xx JSON ``{"error": ...}``
with one line; nothing a client sends takes the server down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import Request  # at module level: FastAPI reads the endpoints' annotations from here

from ..data.images import BadImageError
from ..evaluation.inference import InferenceModel, read_image
from ..evaluation.predict import SCHEMA, top_k_entries

__all__ = ["ServeOptions", "BatchQueue", "create_app"]

PAGE = Path(__file__).with_name("serve_page.html")


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 32 << 20
    max_images: int = 64  # per request
    max_pixels: int = 50_000_000  # per image, from its header
    min_side: int = 8
    top_k: int = 3


class ClientError(Exception):
    """A request the server refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BatchQueue:
    """Gathers images from concurrent requests into batches of up to ``max_batch`` (waiting at most
    ``max_wait_ms`` for more after the first), runs each batch once in a worker thread, and answers
    each image's future with its probabilities."""

    def __init__(self, model: InferenceModel, max_batch: int, max_wait_ms: float, on_batch=None) -> None:
        self.model, self.max_batch, self.max_wait = model, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.lock = threading.Lock()  # one model call at a time (a Grad-CAM request takes it too)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def depth(self) -> int:
        return self.queue.qsize()

    async def predict(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self.queue.put_nowait((image, future))
        return list(await asyncio.gather(*futures))

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        with self.lock, torch.inference_mode():
            return self.model(self.model.prepare(batch)).float().softmax(1).cpu()

    def explain(self, image: torch.Tensor) -> bytes:
        """A Grad-CAM overlay of one image, as PNG bytes (PyTorch models only)."""
        from PIL import Image

        from ..evaluation.evaluate import explain_images

        with self.lock:
            overlay = explain_images(self.model, image[None])[0]
        buf = io.BytesIO()
        Image.fromarray(overlay).save(buf, format="PNG")
        return buf.getvalue()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            items = [(image, future) for image, future in items if not future.done()]  # cancelled clients
            if not items:
                continue
            if self.on_batch:
                self.on_batch(len(items))
            try:
                probs = await asyncio.to_thread(self._infer, torch.stack([image for image, _ in items]))
            except Exception as e:  # noqa: BLE001 - answered to every waiting request, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), row in zip(items, probs):
                if not future.done():
                    future.set_result(row)


def _decode(name: str, data: bytes, model: InferenceModel, options: ServeOptions) -> torch.Tensor:
    """An upload's bytes -> uint8 image tensor, as ``plainnet predict`` reads a file; refusals raise
    :class:`ClientError`."""
    from PIL import Image

    if not data:
        raise ClientError(400, f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:  # the header only: no pixels decoded yet
            width, height = im.size
    except Exception:  # noqa: BLE001 - not an image at all: read_image below words it
        width = height = 0
    if width * height > options.max_pixels:
        raise ClientError(413, f"{name}: {width}x{height} px is over this server's limit of "
                               f"{options.max_pixels:,} pixels per image")
    try:
        return read_image(name, model.preprocess, data=data, smallest=options.min_side)
    except BadImageError as e:
        raise ClientError(413 if e.reason.startswith("too large") else 422, f"{name}: {e.reason}") from None


def _model_info(model: InferenceModel) -> dict:
    from .. import __version__

    name = ((model.config or {}).get("model") or {}).get("name") or model.source.stem
    return {"name": name, "source": str(model.source), "classes": list(model.classes),
            "input_size": model.preprocess.image_size, "preprocess": model.preprocess.to_dict(),
            "form": model.form, "backend": model.backend.runtime, "params": model.backend.params,
            "explain": model.backend.can_explain, "version": __version__}


def load_for_serving(path: str | Path, backend: str = "auto") -> InferenceModel:
    """Any saved form ``predict`` accepts, checked against the asked backend."""
    from ..errors import ConfigError
    from ..evaluation.inference import load_inference_model

    if backend not in ("auto", "torch", "onnxruntime"):
        raise ConfigError(f"backend must be auto, torch or onnxruntime, not {backend!r}")
    model = load_inference_model(path)
    loaded = model.backend.runtime
    if backend not in ("auto", loaded):
        raise ConfigError(f"{model.source.name} runs with {loaded}; for {backend}, "
                          + ("export it first: plainnet export (an .onnx file is served with onnxruntime)"
                             if backend == "onnxruntime" else "serve a checkpoint or run directory"))
    return model


def app_from_env():
    """The app for ``uvicorn --factory`` worker processes (``--workers N``): model and options from
    ``PLAINNET_SERVE`` (JSON written by ``plainnet serve``)."""
    import os

    spec = json.loads(os.environ["PLAINNET_SERVE"])
    return create_app(load_for_serving(spec["model"], spec["backend"]), ServeOptions(**spec["options"]))


def create_app(model: InferenceModel, options: ServeOptions = ServeOptions()):
    """The FastAPI app serving ``model``."""
    from fastapi import FastAPI

    telemetry = _Telemetry()
    queue = BatchQueue(model, options.max_batch, options.max_wait_ms, on_batch=telemetry.batch_sizes.observe)
    telemetry.watch(queue)
    state = {"ready": False}
    app = FastAPI(title="plainnet", version=_model_info(model)["version"], lifespan=_lifespan(model, queue, state),
                  description=f"Image classifier: {', '.join(model.classes)}")
    _add_error_handlers(app, options)
    _add_status_routes(app, model, state, telemetry)
    _add_model_routes(app, model, queue, options)
    app.state.routes = {route.path for route in app.routes}
    return Guard(app, options.max_body_bytes, telemetry.observer(app.state.routes), _error)


def _error(status: int, message: str):
    """A 4xx/5xx answer: ``{"error": one line}``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


class _Telemetry:
    """The Prometheus metrics of one app (its own registry)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry = CollectorRegistry()
        self.requests = Counter("plainnet_requests", "HTTP requests answered", ["path", "status"], registry=registry)
        self.errors = Counter("plainnet_errors", "requests answered with an error (4xx or 5xx)", ["path"],
                              registry=registry)
        self.latency = Histogram("plainnet_request_seconds", "request latency", ["path"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_sizes = Histogram("plainnet_batch_size", "images per model call", registry=registry,
                                     buckets=tuple(2 ** i for i in range(11)))

    def watch(self, queue: BatchQueue) -> None:
        from prometheus_client import Gauge

        Gauge("plainnet_queue_depth", "images waiting for the model", registry=self.registry).set_function(queue.depth)

    def observer(self, routes: set[str]):
        """What :class:`Guard` calls after every request: ``observe(path, status, seconds)``."""
        def observe(path: str, status: int, seconds: float) -> None:
            path = path if path in routes else "other"  # bounded label values
            self.requests.labels(path, str(status)).inc()
            if status >= 400:
                self.errors.labels(path).inc()
            self.latency.labels(path).observe(seconds)
        return observe


def _lifespan(model: InferenceModel, queue: BatchQueue, state: dict):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        queue.start()
        side = model.preprocess.resize_to
        await queue.predict([torch.zeros(3, side, side, dtype=torch.uint8)])  # warm-up, then ready
        gc.freeze()  # the startup objects (torch, FastAPI) leave the collector's scans: p99 latency -25% measured
        state["ready"] = True
        yield
        state["ready"] = False
        await queue.stop()
    return lifespan


def _add_error_handlers(app, options: ServeOptions) -> None:
    @app.exception_handler(ClientError)
    async def client_error(_request, e: ClientError):
        return _error(e.status, str(e))

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_request, _e):
        return _error(413, f"request body over this server's limit of {options.max_body_bytes:,} bytes")


def _add_status_routes(app, model: InferenceModel, state: dict, telemetry: _Telemetry) -> None:
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model_info():
        return _model_info(model)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text()


def _add_model_routes(app, model: InferenceModel, queue: BatchQueue, options: ServeOptions) -> None:
    from fastapi.responses import JSONResponse, Response

    @app.post("/v1/explain", responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request):
        """Grad-CAM heat-map over one image (multipart field ``file``), as a PNG; PyTorch models only."""
        if not model.backend.can_explain:
            raise ClientError(409, "Grad-CAM needs a PyTorch model (a run or checkpoint), not an ONNX or .pt2 file")
        uploads, _ = await _read_request(request, options)
        image = await asyncio.to_thread(_decode, *uploads[0], model, options)
        return Response(await asyncio.to_thread(queue.explain, image), media_type="image/png")

    @app.post("/v1/predict")
    async def predict(request: Request):
        uploads, top_k = await _read_request(request, options)
        images = await asyncio.gather(*(asyncio.to_thread(_decode, name, data, model, options)
                                        for name, data in uploads), return_exceptions=True)
        good = [i for i, im in enumerate(images) if isinstance(im, torch.Tensor)]
        failures = [im for im in images if isinstance(im, ClientError)]
        if not good:
            raise failures[0] if failures else ClientError(400, "no image in the request")
        for im in images:
            if isinstance(im, BaseException) and not isinstance(im, ClientError):
                raise im
        probs = await queue.predict([images[i] for i in good])
        k = max(1, min(top_k, len(model.classes)))
        records = [{"path": name, "ok": False, "error": str(im).split(": ", 1)[-1]}
                   for (name, _), im in zip(uploads, images)]
        for i, row in zip(good, probs):
            records[i] = {"path": uploads[i][0], "ok": True, "top_k": top_k_entries(model.classes, row, k)}
        return JSONResponse({"schema": SCHEMA, "model": str(model.source), "classes": list(model.classes),
                             "top_k": k, "predictions": records})  # as it is: FastAPI's encoder costs ~1 ms


async def _read_request(request, options: ServeOptions) -> tuple[list[tuple[str, bytes]], int]:
    """``[(name, bytes)]`` and ``top_k`` from a multipart form (``file`` fields) or a JSON body
    (``{"images": [base64 or {"name", "data"}], "top_k"}``)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    top_k = options.top_k
    if kind == "multipart/form-data":
        from starlette.datastructures import UploadFile

        form = await request.form(max_files=options.max_images, max_fields=options.max_images + 8)
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        uploads = [(f.filename or f"image{i}", await f.read()) for i, f in enumerate(files)]
        top_k = _top_k(form.get("top_k", top_k))
    elif kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise ClientError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise ClientError(400, 'JSON must be {"images": [base64 strings or {"name", "data"}], "top_k": n}')
        uploads = []
        for i, item in enumerate(body["images"][: options.max_images + 1]):
            name, data = (item.get("name", f"image{i}"), item.get("data")) if isinstance(item, dict) else (
                f"image{i}", item)
            if not isinstance(data, str):
                raise ClientError(400, f"images[{i}]: expected a base64 string")
            try:
                uploads.append((str(name), base64.b64decode(data, validate=True)))
            except (binascii.Error, ValueError):
                raise ClientError(400, f"images[{i}]: not valid base64") from None
        top_k = _top_k(body.get("top_k", top_k))
    elif not kind:
        raise ClientError(400, "empty request: send images as multipart form field 'file' or as JSON")
    else:
        raise ClientError(415, f"content type {kind} is not accepted: use multipart/form-data (field 'file') "
                               "or application/json")
    if not uploads:
        raise ClientError(400, "no image in the request: send one or more form fields named 'file'")
    if len(uploads) > options.max_images:
        raise ClientError(413, f"more than {options.max_images} images in one request")
    return uploads, top_k


def _top_k(value) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ClientError(400, f"top_k must be a whole number, not {value!r}") from None
    if k < 1:
        raise ClientError(400, "top_k must be at least 1")
    return k


class BodyTooLarge(Exception):
    pass


class Guard:
    """Plain ASGI wrapper around the app (cheaper than a FastAPI ``http`` middleware, which costs
    every request an extra task and stream): refuses a declared body over ``limit`` before reading it,
    raises :class:`BodyTooLarge` (answered 413 by the app) when a body without a declared length grows
    past it while received, and reports each request's path, status and seconds to ``observe``."""

    def __init__(self, app, limit: int, observe, error) -> None:
        self.app, self.limit, self.observe, self.error = app, limit, observe, error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, received, status = time.perf_counter(), 0, 500

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge
            return message

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self.limit:
                await self.error(413, f"request body over this server's limit of {self.limit:,} bytes")(
                    scope, receive, sent)
            else:
                await self.app(scope, limited, sent)
        finally:
            self.observe(scope["path"], status, time.perf_counter() - start)
