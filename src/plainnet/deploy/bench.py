"""``plainnet bench``: inference speed of models, forms and backends, measured side by side.

Every (model, backend, dtype, batch) combination gets a runner; after warm-up, runners take turns
(interleaved rounds, so load from other processes hits all of them alike) and the per-call latencies
give p50/p90 latency, throughput (images/s at p50), and the achieved GFLOP/s (2 x MACs / latency).

Models: plainnet names (RepVGG benchmarked in its fused form unless ``:train`` is appended), plainnet
checkpoints or ONNX files, ``torchvision.NAME`` (resnet18/34/50 and vgg16 are the usual references) and
``timm.NAME`` (timm's RepVGG re-parameterized with its own utility). Backends: ``eager`` (PyTorch),
``compile`` (``torch.compile``), ``onnxruntime``, ``openvino`` (the same ONNX files). Dtypes: ``fp32``,
``bf16`` (autocast + channels_last; CUDA: also ``fp16``), ``int8`` (static QDQ ONNX for onnxruntime and
OpenVINO, or torchao PT2E under compile).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, UnknownModelError

__all__ = ["BenchRow", "Runner", "REFERENCES", "bench_models", "fastest", "file_runner", "make_runner", "run_bench",
           "resolve_model"]

#: ``plainnet bench --refs``: well-known models to compare with.
REFERENCES = ["torchvision.resnet18", "torchvision.resnet34", "torchvision.resnet50", "torchvision.vgg16"]

log = logging.getLogger(__name__)


@dataclass
class Runner:
    model: str
    backend: str
    dtype: str
    batch: int
    fn: Callable[[], object]
    macs: int
    params: int
    times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BenchRow:
    model: str
    backend: str
    dtype: str
    batch: int
    p50_ms: float
    p90_ms: float
    images_per_s: float
    gflops: float
    params: int
    macs: int
    calls: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def resolve_model(spec: str, num_classes: int = 1000) -> tuple[nn.Module, str]:
    """A model (eval mode, fp32, CPU) from a bench spec, and its display name."""
    from ..models import create_model, list_models, traits_of
    from ..models.registry import EXTERNAL_PREFIXES, close_names
    from ..models.reparam import reparameterize

    name, _, form = spec.partition(":")
    if name.startswith(EXTERNAL_PREFIXES) or name in list_models():
        traits = traits_of(name)
        if traits.foreign:  # (an unknown torchvision or timm name: UnknownModelError)
            model = create_model(name, num_classes=num_classes).eval()
            if traits.family == "timm" and form != "train":  # timm's own fused forms (its RepVGG, MobileOne)
                import timm.utils

                model = timm.utils.reparameterize_model(model)
            return model.eval(), spec
        model = create_model(name, num_classes=num_classes, deploy=form != "train")
        fused = " (fused)" if traits.branches else ""
        return model.eval(), name + (" (train form)" if form == "train" else fused)
    path = Path(name)
    if path.exists():
        from ..evaluation.inference import load_inference_model

        loaded = load_inference_model(path)
        module = loaded.backend.torch_module()
        if module is None:
            raise ConfigError(f"{spec}: an ONNX file runs only on the onnxruntime backend")
        return reparameterize(module), path.name
    if path.suffix in (".pt", ".ckpt", ".pt2", ".onnx") or "/" in name:
        raise ConfigError(f"{spec}: no such model file")
    close = close_names(name)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(f"unknown model {spec!r}: {hint}(a plainnet name from `plainnet models`, "
                            "torchvision.NAME, timm.NAME, or a checkpoint file)")


def _macs(model: nn.Module, size: int) -> tuple[int, int]:
    from ..models import summarize

    try:
        s = summarize(model, size)
        return s.macs, s.params
    except Exception:  # noqa: BLE001 - a model FlopCounterMode cannot trace still gets timed
        return 0, sum(p.numel() for p in model.parameters())


def make_runner(model: nn.Module, name: str, backend: str, dtype: str, batch: int, size: int,
                device: str = "cpu", calib: list[torch.Tensor] | None = None) -> Runner:
    """Build (and warm up) one runner. Raises ``ValueError`` for unsupported combinations."""
    macs, params = _macs(model, size)
    x = torch.randn(batch, 3, size, size)
    if backend in ("eager", "compile"):
        if dtype == "int8":
            if backend != "compile":
                raise ValueError("int8 in PyTorch needs --backend compile (torchao PT2E)")
            from .quantize import quantize_pt2e

            fn_model = quantize_pt2e(model, x, calib or [torch.randn(8, 3, size, size)])
            fn = _torch_call(fn_model, x, None, device)
        else:
            m = model.to(device)
            amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
            if amp is not None:
                m = m.to(memory_format=torch.channels_last)
            if backend == "compile":
                m = torch.compile(m)
            xd = x.to(device)
            if amp is not None:
                xd = xd.contiguous(memory_format=torch.channels_last)
            fn = _torch_call(m, xd, amp, device)
    elif backend == "onnxruntime":
        fn = _ort_call(model, name, dtype, x, size, device, calib)
    elif backend == "openvino":
        fn = _openvino_call(model, dtype, x, size, device, calib)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    for _ in range(2):  # warm-up: compilation, allocator, caches
        fn()
    return Runner(name, backend, dtype, batch, fn, macs, params)


def file_runner(name: str, loaded, backend: str, dtype: str, batch: int, *, macs: int = 0, params: int = 0) -> Runner:
    """A (warmed-up) runner for a loaded model file -- an ONNX session called directly, or an exported
    module -- on random input of its size (``loaded``: :class:`~plainnet.evaluation.inference.InferenceModel`)."""
    size = loaded.preprocess.image_size
    x = torch.randn(batch, 3, size, size)
    fn = loaded.backend.timed_call(x)
    for _ in range(2):  # warm-up
        fn()
    return Runner(name, backend, dtype, batch, fn, macs, params)


def _torch_call(model: nn.Module, x: torch.Tensor, amp, device: str):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    @torch.inference_mode()
    def call():
        if amp is not None:
            with torch.autocast(device.split(":")[0], dtype=amp):
                out = model(x)
        else:
            out = model(x)
        sync()
        return out

    return call


#: One onnxruntime session per (model, dtype, device): every batch size of a model shares it (the
#: export has a dynamic batch), instead of exporting (and for int8, calibrating) once per batch size.
_ORT_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ort_call(model: nn.Module, name: str, dtype: str, x: torch.Tensor, size: int, device: str, calib):
    from ..model_files import onnx_session

    if dtype not in ("fp32", "int8"):
        raise ValueError("onnxruntime on the CPU runs fp32 and int8")
    sessions = _ORT_SESSIONS.setdefault(model, {})
    session = sessions.get((dtype, device))
    if session is None:
        with tempfile.TemporaryDirectory(prefix="plainnet-bench-") as tmp:  # the session keeps the model
            path = _onnx_file(model, dtype, x, size, Path(tmp), calib)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
            session = sessions[(dtype, device)] = onnx_session(path, threads=torch.get_num_threads(),
                                                              providers=providers)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def _onnx_file(model: nn.Module, dtype: str, x: torch.Tensor, size: int, folder: Path, calib) -> Path:
    """The model exported to ONNX (dynamic batch) in ``folder``; for int8, quantized to static QDQ."""
    from .export import export_onnx
    from .quantize import QuantOptions, quantize_onnx

    path = export_onnx(model, folder / "model.onnx", x, dynamic_batch=True).path
    if dtype == "int8":
        batches = [c.numpy() for c in (calib or [torch.randn(8, 3, size, size)])]
        path = quantize_onnx(path, folder / "model.int8.onnx", batches, QuantOptions(keep_ends_float=False))
    return path


def openvino_runner(path: str | Path, threads: int | None = None):
    """An ONNX file compiled by OpenVINO's CPU runtime: ``fn(x: np.ndarray) -> logits (np.ndarray)``.
    Float layers run in fp32; a QDQ int8 file's quantized layers run on OpenVINO's own int8 kernels.
    Raises ``ValueError`` without openvino."""
    try:
        import openvino as ov
    except ImportError:
        raise ValueError("the openvino backend needs the openvino package (pip install openvino)") from None
    # f32: OpenVINO would otherwise run the float parts in bf16 on CPUs with native bf16
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]


def _openvino_call(model: nn.Module, dtype: str, x: torch.Tensor, size: int, device: str, calib):
    """OpenVINO on the same ONNX files as onnxruntime (fp32, or the int8 QDQ model)."""
    if device != "cpu":
        raise ValueError("the openvino backend runs on the CPU")
    if dtype not in ("fp32", "int8"):
        raise ValueError("openvino runs fp32 and int8 (QDQ ONNX)")
    with tempfile.TemporaryDirectory(prefix="plainnet-bench-") as tmp:  # compiled: the file can go
        run = openvino_runner(_onnx_file(model, dtype, x, size, Path(tmp), calib))
    feed = x.numpy()
    return lambda: run(feed)


def compare_runtimes(path: str | Path, images: torch.Tensor, reference: torch.Tensor, *, rounds: int = 3,
                     seconds: float = 0.3, min_agreement: float = 0.99) -> list[dict]:
    """onnxruntime and (when installed) OpenVINO on one ONNX file, side by side: images/s at batch 16 (or
    the file's fixed batch; interleaved rounds) and top-1 agreement with ``reference`` logits (e.g. the
    PyTorch fp32 model's) on ``images``. Fastest first; ``keeps_accuracy``: agreement >= ``min_agreement``."""
    from ..model_files import onnx_session

    session = onnx_session(path, threads=torch.get_num_threads())
    name = session.get_inputs()[0].name
    runtimes = {"onnxruntime": lambda a: session.run(None, {name: a})[0]}
    try:
        runtimes["openvino"] = openvino_runner(path)
    except ValueError:  # openvino not installed
        pass
    fixed = session.get_inputs()[0].shape[0]
    size = fixed if isinstance(fixed, int) and fixed > 0 else 16  # an export without a dynamic batch
    batches = [images[i : i + size].numpy() for i in range(0, len(images) - size + 1, size)]
    n = sum(len(b) for b in batches)
    rows = []
    for backend, run in runtimes.items():
        top1 = torch.cat([torch.from_numpy(run(b)).argmax(1) for b in batches])
        rows.append({"backend": backend, "agreement": (top1 == reference[:n].argmax(1)).float().mean().item()})
    runners = [Runner(r["backend"], r["backend"], "", len(batches[0]), lambda f=runtimes[r["backend"]]: f(batches[0]),
                      0, 0) for r in rows]
    for row, timed in zip(rows, run_bench(runners, rounds=rounds, min_seconds=seconds)):
        row["images_per_s"], row["batch"] = timed.images_per_s, timed.batch
        row["keeps_accuracy"] = row["agreement"] >= min_agreement
    return sorted(rows, key=lambda r: -r["images_per_s"])


def run_bench(runners: list[Runner], *, rounds: int = 5, min_seconds: float = 0.5) -> list[BenchRow]:
    """Interleaved rounds: in each, every runner is called repeatedly for about ``min_seconds``."""
    for _ in range(rounds):
        for r in runners:
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                r.fn()
                r.times.append(time.perf_counter() - t)
                if time.perf_counter() - start >= min_seconds:
                    break
    rows = []
    for r in runners:
        times = sorted(r.times)
        p50 = statistics.median(times)
        p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
        rows.append(BenchRow(r.model, r.backend, r.dtype, r.batch, p50 * 1e3, p90 * 1e3, r.batch / p50,
                             2 * r.macs * r.batch / p50 / 1e9, r.params, r.macs, len(times)))
    return rows


def plot_bench(rows: list[BenchRow], path: str | Path) -> Path:
    """Throughput bars, one group per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 0.42 * len(rows) / len(batches) + 1.6),
                             dpi=110, squeeze=False)
    for ax, b in zip(axes[0], batches):
        sel = sorted((r for r in rows if r.batch == b), key=lambda r: r.images_per_s)
        labels = [f"{r.model} · {r.backend} {r.dtype}" for r in sel]
        ax.barh(labels, [r.images_per_s for r in sel], color=["#2f6fb3" if "repvgg" in r.model or "vgg" in r.model
                                                             and "torchvision" not in r.model else "#9aa5b1"
                                                             for r in sel])
        ax.set_title(f"batch {b}")
        ax.set_xlabel("images / s")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def bench_models(specs: list[str], *, batches=(1, 16), size: int = 224, backends=("eager",), dtypes=("fp32",),
                 device: str = "cpu", rounds: int = 5, seconds: float = 0.5,
                 out: str | Path | None = None) -> tuple[list[BenchRow], list[str], Path]:
    """Time every model x backend x dtype x batch in interleaved rounds and write ``bench.json``,
    ``bench.csv`` and ``bench.png`` into ``out``. Returns the rows, the combinations skipped (why), and
    ``out``. Raises :class:`~plainnet.errors.ConfigError` when nothing can run."""
    import csv
    import json

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device on this machine")
    runners, skipped = [], []
    models = [resolve_model(spec) for spec in specs]  # every name checked before anything is timed
    for model, name in models:
        for be in backends:
            for dt in dtypes:
                for b in batches:
                    try:
                        runners.append(make_runner(model, name, be, dt, int(b), size, device))
                    except ValueError as e:
                        skipped.append(f"{name} {be} {dt}: {e}")
    if not runners:
        raise ConfigError("nothing to run with these options: " + "; ".join(sorted(set(skipped))))
    rows = run_bench(runners, rounds=rounds, min_seconds=seconds)
    out = Path(out) if out else Path(f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    with (out / "bench.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].as_dict()))
        w.writeheader()
        w.writerows(r.as_dict() for r in rows)
    plot_bench(rows, out / "bench.png")
    return rows, sorted(set(skipped)), out


def fastest(rows: list[BenchRow]) -> list[tuple[BenchRow, BenchRow]]:
    """For each model and batch timed in more than one way: (fastest, slowest)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.model, r.batch), []).append(r)
    return [(max(g, key=lambda r: r.images_per_s), min(g, key=lambda r: r.images_per_s))
            for g in groups.values() if len(g) > 1]
