"""Load test of ``plainnet serve`` on the loopback: dynamic batching against ``--max-batch 1``.

N concurrent clients send real potato photos (one image per request) until M images are answered;
every answer is checked against ``plainnet predict`` on the same file (top class, probability within
1e-4). Both servers run side by side (an idle one costs nothing); the configurations alternate, round by
round; throughput and latency percentiles are medians over rounds. Bounded: loopback only, a fixed
request count, and a time limit per round after which the round stops itself.

    python benchmarks/serve_load.py RUN_OR_MODEL [--clients 32] [--images 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write_section  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: str, max_batch: int, max_wait_ms: float, stack: str = "plainnet") -> tuple[subprocess.Popen, str]:
    """A server on a free loopback port: ``plainnet serve``, or the same model on LitServe."""
    import httpx

    port = _port()
    if stack == "litserve":
        command = [sys.executable, str(Path(__file__).with_name("_litserve_app.py")), model, str(port),
                   str(max_batch), str(max_wait_ms)]
    else:
        command = [sys.executable, "-m", "plainnet", "serve", model, "--port", str(port),
                   "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    # its own process group: LitServe's worker processes (and LitServe itself, which outlives a SIGTERM)
    # are stopped with it, and an idle server left behind cannot slow what is measured next
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/health" if stack == "litserve" else f"{url}/readyz"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed: {proc.stderr.read()}")
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server not ready in 120 s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, then SIGKILL to whatever is left after 30 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            continue
        try:  # the group leader exited; its children may not have
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


def _round(url: str, photos: list[tuple[Path, bytes]], clients: int, total: int, limit_s: float,
           expected: dict[str, tuple[str, float]]) -> dict:
    """``clients`` concurrent clients (asyncio tasks on one connection pool: a load generator of 32
    Python threads spends the shared cores on thread switching, and its pauses land in the latencies)
    post one photo each, again and again, until ``total`` are answered or ``limit_s`` passes."""
    import asyncio

    import httpx

    latencies: list[float] = []
    errors, mismatches, next_index = [0], [0], [0]

    async def client(session: httpx.AsyncClient, stop_at: float) -> None:
        while time.monotonic() < stop_at and next_index[0] < total:
            path, data = photos[next_index[0] % len(photos)]
            next_index[0] += 1
            start = time.perf_counter()
            try:
                r = await session.post(f"{url}/v1/predict", files=[("file", (path.name, data, "image/jpeg"))])
                top = r.json()["predictions"][0]["top_k"][0] if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                top = None
            if top is None:
                errors[0] += 1
                continue
            latencies.append(time.perf_counter() - start)
            want = expected[path.name]
            if top["class"] != want[0] or abs(top["probability"] - want[1]) > 1e-4:
                mismatches[0] += 1

    async def run() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as session:
            start = time.perf_counter()
            await asyncio.gather(*(client(session, time.monotonic() + limit_s) for _ in range(clients)))
            return time.perf_counter() - start

    wall = asyncio.run(run())
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"answered": len(latencies), "errors": errors[0], "mismatches": mismatches[0], "img_s": len(latencies) / wall,
            "p50": q[49], "p99": q[98]}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    import torch

    from plainnet.evaluation.inference import load_inference_model
    from plainnet.evaluation.predict import predict_files

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--litserve", action="store_true",
                    help="also the same model on LitServe (pip install litserve), to compare the serving stacks")
    ap.add_argument("--limit-s", type=float, default=300.0, help="a round stops itself after this long")
    args = ap.parse_args()

    root = SHARED / "potato"
    paths = [p for c in sorted(root.iterdir()) for p in sorted(c.iterdir())[:100]]
    photos = [(p, p.read_bytes()) for p in paths]
    loaded = load_inference_model(args.model)
    reference = predict_files(loaded, paths, top_k=1)["predictions"]
    described = (f"{((loaded.config or {}).get('model') or {}).get('name', loaded.source.stem)} "
                 f"({loaded.form} form, {loaded.preprocess.image_size} px, {len(loaded.classes)} classes)")
    expected = {Path(r["path"]).name: (r["top_k"][0]["class"], r["top_k"][0]["probability"]) for r in reference}
    configs = {"dynamic batching (--max-batch 32)": (32, "plainnet"), "--max-batch 1": (1, "plainnet")}
    if args.litserve:
        configs[f"LitServe {_version('litserve')}, max_batch_size 32"] = (32, "litserve")
    servers = {name: _start(args.model, b, args.max_wait_ms, stack) for name, (b, stack) in configs.items()}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        for _ in range(args.rounds):
            for name, (_, url) in servers.items():
                results[name].append(_round(url, photos, args.clients, args.images, args.limit_s, expected))
                print(name, results[name][-1], flush=True)
    finally:
        for proc, _ in servers.values():
            _stop(proc)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    base = "--max-batch 1"
    section, title = (("serve-stack", "serving stacks under the same load: FastAPI + uvicorn (plainnet serve) vs "
                                      "LitServe") if args.litserve else
                      ("serve-load", "`plainnet serve` under concurrent clients, dynamic batching vs --max-batch 1"))
    lines = [f"## {section}: {title}", "",
             f"{args.clients} concurrent clients on the loopback, one real potato photo per request, {args.images} "
             f"images per round, {args.rounds} rounds alternating the two servers (medians); every answer checked "
             f"against `plainnet predict` on the same file. Model: {described}. The clients share the "
             f"machine's {os.cpu_count()} cores with the server; torch {torch.__version__}.", "",
             "| server | answered | errors | mismatches vs predict | images/s | vs --max-batch 1 | p50 latency | "
             "p99 latency | p99 / p50 |", "|---|---|---|---|---|---|---|---|---|"]
    for name in configs:
        answered = sum(r["answered"] for r in results[name])
        lines.append(f"| {name} | {answered} | {sum(r['errors'] for r in results[name])} | "
                     f"{sum(r['mismatches'] for r in results[name])} | {med(name, 'img_s'):.1f} | "
                     f"**{med(name, 'img_s') / med(base, 'img_s'):.2f}×** | {med(name, 'p50') * 1000:.0f} ms | "
                     f"{med(name, 'p99') * 1000:.0f} ms | {med(name, 'p99') / med(name, 'p50'):.2f} |")
    write_section(section, "\n".join(lines))


if __name__ == "__main__":
    main()
