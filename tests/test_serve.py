"""``plainnet serve``: real HTTP against a server on a free loopback port (the app in this process, and
one ``plainnet serve`` subprocess), the page in headless Chromium, and every kind of bad input."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from _util import chrome, run_cli
from plainnet.deploy.serve import ServeOptions, create_app, load_for_serving
from plainnet.evaluation.predict import predict_files

LIMITS = ServeOptions(max_batch=8, max_wait_ms=20, max_body_bytes=2 << 20, max_pixels=4_000_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, seconds: float = 60, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {seconds} s")


@pytest.fixture(scope="module")
def images(datasets_dir) -> list[Path]:
    """Two real photos of each potato class."""
    root = datasets_dir / "potato"
    return [p for c in sorted(root.iterdir()) for p in sorted(c.iterdir())[:2]]


@contextlib.contextmanager
def serving(path: Path, backend: str = "auto"):
    """The app serving ``path``, in this process (a uvicorn thread) on a free loopback port."""
    import uvicorn

    model = load_for_serving(path, backend)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model, LIMITS), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, model
    finally:
        srv.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def server(tiny_run):
    with serving(tiny_run) as served:
        yield served


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """The tiny run exported to ONNX and to .pt2, any batch size, classes and preprocessing inside."""
    from plainnet.deploy.export import export_onnx, export_pt2
    from plainnet.evaluation.inference import load_inference_model

    loaded = load_inference_model(tiny_run)
    folder = tmp_path_factory.mktemp("exported")
    side = loaded.preprocess.image_size
    example = torch.rand(2, 3, side, side)
    meta = {"classes": loaded.classes, "preprocess": loaded.preprocess.to_dict()}
    return {"onnx": export_onnx(loaded.module, folder / "tiny.onnx", example, metadata=meta, dynamic_batch=True).path,
            "pt2": export_pt2(loaded.module, folder / "tiny.pt2", example, metadata=meta, dynamic_batch=True).path}


def post_files(url: str, paths: list[Path], **data) -> httpx.Response:
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return httpx.post(f"{url}/v1/predict", files=files, data=data, timeout=30)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_answers_match_plainnet_predict_and_follow_the_schema(server, images):
    import jsonschema

    url, model = server
    expected = {Path(r["path"]).name: r for r in predict_files(model, images, top_k=3)["predictions"]}
    with ThreadPoolExecutor(8) as pool:  # one image per request, concurrently
        single = list(pool.map(lambda p: post_files(url, [p]), images))
    many = post_files(url, images, top_k="3")
    b64 = httpx.post(f"{url}/v1/predict", timeout=30, json={
        "images": [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in images[:2]]})
    schema = json.loads((Path(__file__).parents[1] / "docs" / "predict.schema.json").read_text())
    records = []
    for response in [*single, many, b64]:
        assert response.status_code == 200, response.text
        jsonschema.validate(response.json(), schema)
        records += response.json()["predictions"]
    assert len(records) == 2 * len(images) + 2
    for record in records:
        want = expected[record["path"]]
        assert [e["class"] for e in record["top_k"]] == [e["class"] for e in want["top_k"]]
        for got, ref in zip(record["top_k"], want["top_k"]):
            assert got["probability"] == pytest.approx(ref["probability"], abs=1e-4)


def test_concurrent_requests_are_batched(server, images):
    url, _ = server
    before = httpx.get(f"{url}/metrics").text
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: post_files(url, [images[i % len(images)]]), range(32)))
    assert all(r.status_code == 200 for r in responses)
    after = httpx.get(f"{url}/metrics").text
    calls = metric(after, "plainnet_batch_size_count") - metric(before, "plainnet_batch_size_count")
    batched = metric(after, "plainnet_batch_size_sum") - metric(before, "plainnet_batch_size_sum")
    assert batched == 32 and calls < 32  # 32 images in fewer model calls
    assert 'plainnet_batch_size_bucket{le="1.0"}' in after


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\0" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat)))


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_gets_a_one_line_4xx_and_the_server_stays_up(server, images):
    url, _ = server
    jpeg = images[0].read_bytes()

    def upload(name, data, kind="image/png"):
        return httpx.post(f"{url}/v1/predict", files=[("file", (name, data, kind))], timeout=30)

    cases = {
        "decompression bomb": (upload("bomb.png", _png_header(100_000, 100_000)), 413, "pixels"),
        "20000x20000 PNG": (upload("big.png", _png(20_000, 20_000, "1")), 413, "pixels"),
        "1x1 image": (upload("dot.png", _png(1, 1)), 422, "too small"),
        "truncated JPEG": (upload("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"), 422, "truncated"),
        "text file": (upload("notes.txt", b"just some words\n", "text/plain"), 422, "not an image"),
        "empty file": (upload("empty.jpg", b""), 400, "empty"),
        "empty body": (httpx.post(f"{url}/v1/predict", timeout=30), 400, "empty request"),
        "wrong content type": (httpx.post(f"{url}/v1/predict", content=b"hello",
                                          headers={"content-type": "text/plain"}), 415, "text/plain"),
        "huge JSON": (httpx.post(f"{url}/v1/predict", content=b'{"images": ["' + b"A" * (3 << 20) + b'"]}',
                                 headers={"content-type": "application/json"}, timeout=30), 413, "limit"),
        "invalid JSON": (httpx.post(f"{url}/v1/predict", content=b"{nope",
                                    headers={"content-type": "application/json"}), 400, "not valid JSON"),
        "bad base64": (httpx.post(f"{url}/v1/predict", json={"images": ["***"]}), 400, "base64"),
        "no file field": (httpx.post(f"{url}/v1/predict", files=[("other", ("a.jpg", jpeg))]), 400, "'file'"),
        "bad top_k": (post_files(url, images[:1], top_k="many"), 400, "top_k"),
    }
    for what, (response, status, words) in cases.items():
        assert response.status_code == status, (what, response.status_code, response.text)
        message = response.json()["error"]
        assert words in message and "\n" not in message, (what, message)
    mixed = httpx.post(f"{url}/v1/predict", files=[("file", ("good.jpg", jpeg)), ("file", ("bad.txt", b"x"))])
    assert mixed.status_code == 200  # a bad file among good ones fails alone, as in plainnet predict
    assert [r["ok"] for r in mixed.json()["predictions"]] == [True, False]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    for i in range(3):  # unknown paths: 404, counted under one label (no label per URL a client invents)
        assert httpx.get(f"{url}/no/such/{i}").status_code == 404
    metrics = httpx.get(f"{url}/metrics").text
    assert metric(metrics, "plainnet_errors_total") >= len(cases) + 3 and "/no/such" not in metrics
    assert 'plainnet_errors_total{path="other"} 3.0' in metrics


def test_grad_cam_overlay_of_an_upload(server, images):
    from PIL import Image

    url, model = server
    png = httpx.post(f"{url}/v1/explain", files=[("file", (images[0].name, images[0].read_bytes()))], timeout=60)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as im:
        assert im.size == (model.preprocess.image_size,) * 2 and im.mode == "RGB"
    bad = httpx.post(f"{url}/v1/explain", files=[("file", ("x.txt", b"words"))])
    assert bad.status_code == 422 and "not an image" in bad.json()["error"]


def test_model_info_health_metrics_and_openapi(server):
    url, model = server
    info = httpx.get(f"{url}/v1/model").json()
    assert info["classes"] == model.classes and info["input_size"] == model.preprocess.image_size
    assert info["backend"] == "torch" and info["form"] == model.form and info["params"] > 0 and info["version"]
    assert info["explain"] is True
    assert httpx.get(f"{url}/readyz").json() == {"ready": True}
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("plainnet_requests_total", "plainnet_errors_total", "plainnet_request_seconds_bucket",
                 "plainnet_batch_size_bucket", "plainnet_queue_depth"):
        assert name in metrics.text, name
    api = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(api["paths"])


def test_the_page_predicts_an_uploaded_photo_in_chromium(server, images):
    from selenium.webdriver.support.ui import WebDriverWait

    url, model = server
    photo = images[-1]
    expected = predict_files(model, [photo], top_k=1)["predictions"][0]["top_k"][0]["class"]
    page = httpx.get(f"{url}/").text
    assert "src=\"http" not in page and "href=\"http" not in page  # no external assets: works offline
    driver = chrome()
    try:
        driver.get(f"{url}/")
        WebDriverWait(driver, 20).until(lambda d: "classes:" in d.find_element("id", "model").text)
        driver.find_element("id", "files").send_keys(str(photo))
        result = WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", ".result"))[0]
        assert result.get_attribute("data-predicted") == expected
        assert expected in result.text and "%" in result.text
        overlay = result.find_element("css selector", "img.overlay")  # Grad-CAM beside the photo
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", overlay))
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plainnet_serve_subprocess_end_to_end(tiny_run, images):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a batch waits up to 1.5 s for more images: a request stays in flight while SIGTERM arrives
    proc = subprocess.Popen([sys.executable, "-m", "plainnet", "serve", str(tiny_run), "--port", str(port),
                             "--max-batch", "4", "--max-wait-ms", "1500"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(url, proc=proc)
        other = _non_loopback_address()
        if other:  # listening on the loopback address only, by default
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
        answer: list[httpx.Response] = []
        in_flight = threading.Thread(target=lambda: answer.append(post_files(url, images[:2])))
        in_flight.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # graceful shutdown: the request in flight is still answered
        in_flight.join(30)
        assert answer and answer[0].status_code == 200 and all(r["ok"] for r in answer[0].json()["predictions"])
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
    missing = run_cli("serve", tiny_run / "nothing.pt")
    assert missing.code != 0 and "not found" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def assert_answers_like_predict(url: str, model, images: list[Path]) -> None:
    expected = {Path(r["path"]).name: r["top_k"][0] for r in predict_files(model, images, top_k=1)["predictions"]}
    with ThreadPoolExecutor(6) as pool:  # concurrently, so that they share model calls
        responses = list(pool.map(lambda p: post_files(url, [p], top_k="1"), images))
    for response in responses:
        assert response.status_code == 200, response.text
        (record,) = response.json()["predictions"]
        want = expected[record["path"]]
        assert record["top_k"][0]["class"] == want["class"]
        assert record["top_k"][0]["probability"] == pytest.approx(want["probability"], abs=1e-4)


@pytest.mark.parametrize("form", ["onnx", "pt2"])
def test_exported_forms_are_served_like_predict(exported, images, form):
    with serving(exported[form]) as (url, model):
        assert_answers_like_predict(url, model, images)
        info = httpx.get(f"{url}/v1/model").json()
        assert info["backend"] == ("onnxruntime" if form == "onnx" else "torch") and info["explain"] is False
        assert info["classes"] == model.classes and info["input_size"] == model.preprocess.image_size
        refused = httpx.post(f"{url}/v1/explain", files=[("file", (images[0].name, images[0].read_bytes()))])
        assert refused.status_code == 409 and "Grad-CAM needs a PyTorch model" in refused.json()["error"]


def test_backend_must_match_the_file(tiny_run, exported):
    from plainnet.errors import ConfigError

    with pytest.raises(ConfigError, match="export it first"):
        load_for_serving(tiny_run, "onnxruntime")
    with pytest.raises(ConfigError, match="serve a checkpoint"):
        load_for_serving(exported["onnx"], "torch")
    assert load_for_serving(exported["onnx"], "onnxruntime").backend.runtime == "onnxruntime"


def test_serve_with_two_worker_processes(exported, images):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "plainnet", "serve", str(exported["onnx"]), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, proc=proc)
        deadline = time.monotonic() + 60  # both workers load the model; /readyz answered by one of them
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        from plainnet.evaluation.inference import load_inference_model

        assert_answers_like_predict(url, load_inference_model(exported["onnx"]), images * 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # no worker left behind
    finally:
        if proc.poll() is None:
            proc.kill()


def _children(pid: int) -> list[int]:
    """The worker processes uvicorn started (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def test_every_saved_form_runs_through_one_backend_interface(tiny_run, exported):
    """Checkpoint, .pt2 and ONNX answer the same logits through ``backend`` and say what they can do:
    only the model as built can be explained and pruned; only ONNX has a fixed input size."""
    from plainnet.evaluation.inference import load_inference_model, sample_images

    checkpoint = load_inference_model(tiny_run)
    x = sample_images(checkpoint, n=5)
    assert len(x) == 5
    reference = checkpoint(x)
    for path in (tiny_run, exported["pt2"], exported["onnx"]):
        loaded = load_inference_model(path)
        backend = loaded.backend
        assert torch.allclose(loaded(x), reference, atol=1e-3), backend.form
        assert backend.can_explain == (path == tiny_run) == (backend.built is not None)
        assert backend.training_form == (path == tiny_run)
        assert backend.fixed_size == (backend.runtime == "onnxruntime") == (path == exported["onnx"])
        assert (backend.torch_module() is None) == (backend.runtime == "onnxruntime")
        assert backend.timed_call(x)() is not None
