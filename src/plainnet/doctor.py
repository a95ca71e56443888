"""What this machine does for plainnet, measured rather than assumed (``plainnet doctor``).

A RepVGG or VGG network spends nearly all its time in 3x3 convolutions, so one representative layer
(128 -> 128 channels at 28x28, batch 16, channels_last) is timed in each form plainnet can run it:
fp32 and bf16 autocast in PyTorch, forward alone (inference) and forward + backward (training), and
onnxruntime int8 with the weights plainnet would pick on this CPU. Timings are interleaved rounds and
medians (:func:`plainnet.deploy.bench.run_bench`); the whole check takes a few seconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .cpu import cpu_name, describe_cpu, int8_pairs_saturate

__all__ = ["KernelSpeed", "Diagnosis", "diagnose"]

#: The timed layer: channels, side, batch.
CHANNELS, SIDE, BATCH = 128, 28, 16
LIBRARIES = ("torch", "torchvision", "lightning", "onnxruntime", "onnx", "numpy", "pillow", "torchao")


@dataclass(frozen=True)
class KernelSpeed:
    name: str
    gflops: float
    ms: float


@dataclass(frozen=True)
class Diagnosis:
    cpu: str
    threads: int
    speeds: tuple[KernelSpeed, ...]
    choices: tuple[tuple[str, str, str], ...]  # (what, choice, why)
    versions: tuple[tuple[str, str], ...]


def _layer() -> nn.Module:
    conv = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
    return nn.Sequential(conv, nn.ReLU()).to(memory_format=torch.channels_last)


def _torch_runner(name: str, bf16: bool, backward: bool):
    from .deploy.bench import Runner

    layer = _layer()
    x = torch.randn(BATCH, CHANNELS, SIDE, SIDE).to(memory_format=torch.channels_last).requires_grad_(backward)
    macs = CHANNELS * CHANNELS * 9 * SIDE * SIDE

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if backward:
                layer(x).float().sum().backward()
            else:
                with torch.no_grad():
                    layer(x)

    # forward + backward computes the forward product once and two of the same size for the gradients
    return Runner(name, "eager", "bf16" if bf16 else "fp32", BATCH, step, macs * (3 if backward else 1), 0)


def _int8_runner(folder: Path):
    import numpy as np

    from .deploy.bench import Runner
    from .deploy.export import export_onnx
    from .deploy.quantize import QuantOptions, quantize_onnx
    from .model_files import onnx_session

    layer = _layer().eval().to(memory_format=torch.contiguous_format)
    x = torch.randn(BATCH, CHANNELS, SIDE, SIDE)
    fp32 = export_onnx(layer, folder / "layer.onnx", x[:2], dynamic_batch=True).path
    int8 = quantize_onnx(fp32, folder / "layer.int8.onnx", [x[i : i + 4].numpy() for i in range(0, BATCH, 4)],
                         QuantOptions())
    session = onnx_session(int8, threads=torch.get_num_threads())
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.numpy())}
    bits = 7 if int8_pairs_saturate() else 8
    return Runner(f"int8 forward (onnxruntime, {bits}-bit weights)", "onnxruntime", "int8", BATCH,
                  lambda: session.run(None, feed), CHANNELS * CHANNELS * 9 * SIDE * SIDE, 0)


def diagnose(seconds: float = 0.3, rounds: int = 3) -> Diagnosis:
    """Time the layer in every form (``rounds`` interleaved rounds of about ``seconds`` each) and say
    what plainnet will use here and why."""
    from .deploy.bench import run_bench
    from .engine.recipe import cpu_bf16

    native_bf16, bf16_why = cpu_bf16()
    with tempfile.TemporaryDirectory(prefix="plainnet-doctor-") as tmp:
        runners = [_torch_runner("fp32 forward", False, False), _torch_runner("bf16 forward", True, False),
                   _torch_runner("fp32 forward+backward (training)", False, True),
                   _torch_runner("bf16 forward+backward (training)", True, True), _int8_runner(Path(tmp))]
        rows = run_bench(runners, rounds=rounds, min_seconds=seconds)
    speeds = tuple(KernelSpeed(r.model, r.gflops, r.p50_ms) for r in rows)
    by = {s.name.split(" (")[0]: s.gflops for s in speeds}
    train_ratio = by["bf16 forward+backward"] / by["fp32 forward+backward"]
    int8_ratio = by["int8 forward"] / by["fp32 forward"]
    choices = (
        ("native bf16", "yes" if native_bf16 else "no", bf16_why if not native_bf16 else
         f"{bf16_why}, and torch's oneDNN runs it"),
        ("training precision", "bf16" if native_bf16 and train_ratio > 1 else "fp32",
         f"bf16 trains this layer at {train_ratio:.2f}x the fp32 speed ("
         + ("native bf16; `train` measures its own model both ways before it starts)" if native_bf16 else
            "emulated bf16: `train` never times or picks it here)")),
        ("int8 weights", "7-bit" if int8_pairs_saturate() else "8-bit",
         "x86 without VNNI: 8-bit products would saturate" if int8_pairs_saturate()
         else "VNNI or non-x86: 8-bit products accumulate exactly"),
        ("fastest inference form", "onnxruntime int8" if int8_ratio > 1 else "PyTorch fp32",
         f"int8 measured at {int8_ratio:.2f}x fp32 eager on this layer"),
    )
    versions = []
    for lib in LIBRARIES:
        try:
            versions.append((lib, importlib.metadata.version(lib)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((lib, "not installed"))
    versions.append(("python", platform.python_version()))
    return Diagnosis(cpu=describe_cpu() if cpu_name() else f"{platform.machine()}, {os.cpu_count()} cores",
                     threads=torch.get_num_threads(), speeds=speeds, choices=choices, versions=tuple(versions))
