"""Int8 post-training quantization: onnxruntime (QDQ) and the PyTorch-native torchao PT2E path.

- ``ort``: static quantization of the fused ONNX model with onnxruntime (QDQ format, per-channel
  weights, activations calibrated on real images by min-max, percentile or entropy); measured 3.5x
  faster than eager fp32 for fused RepVGG-A0 here. Sensitive layers (the first convolution, which sees
  raw pixels, and the classifier) can be kept in float.
- ``dynamic``: dynamic int8 for fully connected layers only (VGG's 4096-wide head holds ~90% of its
  weights), with no calibration.
- ``pt2e``: torchao's PT2E flow with ``X86InductorQuantizer``; fast only under ``torch.compile`` with
  Inductor's freezing (``compile_int8``).
  ``torch.ao.quantization`` (eager/FX) is deprecated and not used.

Why RepVGG needs care: fusing 3x3, 1x1 and identity branches gives kernels whose per-output-channel
ranges differ widely, so one scale per tensor wastes most of the int8 grid. Measured on a CIFAR-10
RepVGG-A0 (docs/benchmarks.md): per-tensor int8 lost 3.3 points, per-channel weights 0.05; percentile or
entropy calibration and float first/last layers did not help further and cost speed, so the default is
per-channel weights, min-max activations, every layer int8.

Why the CPU matters: on x86 CPUs without VNNI (AMD Zen 2/3, Intel before Ice Lake), onnxruntime's
u8 x s8 kernels add pairs of products in a saturating int16 and clip large sums; there the weights are
quantized to 7 bits (``reduce_range``), which keeps every pair sum in range at the same speed (same
kernels, smaller values). See :func:`plainnet.cpu.int8_pairs_saturate` and docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["QuantOptions", "compile_int8", "quantize_dynamic_linear", "quantize_onnx", "quantize_pt2e",
           "sensitive_nodes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantOptions:
    per_channel: bool = True
    #: ``minmax``, ``percentile`` or ``entropy``.
    calibration: str = "minmax"
    #: Keep the first convolution and the classifier in float.
    keep_ends_float: bool = False
    #: Fully connected layers get dynamic int8 (weights int8, activations quantized per call) instead of
    #: static; for VGG's large head.
    dynamic_linear: bool = False
    #: 7-bit weights, for x86 CPUs without VNNI whose int8 kernels saturate; ``None``: decide from this
    #: CPU (:func:`plainnet.cpu.int8_pairs_saturate`).
    reduce_range: bool | None = None

    def resolved_reduce_range(self) -> bool:
        from ..cpu import int8_pairs_saturate

        return int8_pairs_saturate() if self.reduce_range is None else self.reduce_range


NAIVE = QuantOptions(per_channel=False, calibration="minmax", keep_ends_float=False)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over preprocessed images, re-batched to equal batches
    of ``batch`` (the histogram calibrators cannot mix batch sizes)."""

    def __init__(self, name: str, batches: Iterable[np.ndarray], batch: int = 8) -> None:
        images = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])
        usable = max(len(images) // batch, 1) * batch if len(images) >= batch else len(images)
        self.name = name
        self.batches = iter(np.split(images[:usable], max(usable // batch, 1)))

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch.astype(np.float32)}

    def rewind(self) -> None:  # pragma: no cover - onnxruntime calls it only for some methods
        pass


def _without_value_info(src: str | Path, dst: Path) -> Path:
    """A copy without the exporter's recorded intermediate shapes (``value_info``): onnxruntime's
    quantizer rewrites some tensors (e.g. transposes Gemm weights) under the same name, and stale
    shapes then fail its shape inference. They are recomputed anyway."""
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def sensitive_nodes(path: str | Path) -> list[str]:
    """Names of the first Conv and the last Gemm/MatMul: the layers int8 hurts most."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    return ([convs[0]] if convs else []) + ([heads[-1]] if heads else [])


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[np.ndarray],
                  options: QuantOptions = QuantOptions()) -> Path:
    """Static int8 (QDQ) quantization of an ONNX model, calibrated on ``calibration`` batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if options.calibration not in methods:
        raise ValueError(f"calibration must be one of {', '.join(methods)}")
    out_path = Path(out_path)
    reduce_range = options.resolved_reduce_range()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(_without_value_info(fp32_path, Path(tmp) / "in.onnx")), str(prepared),
                          skip_symbolic_shape=True)
        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        extra = {"CalibMaxIntermediateOutputs": 64}
        if options.calibration == "percentile":
            extra["CalibPercentile"] = 99.999
        static_out = Path(tmp) / "static.onnx" if options.dynamic_linear else out_path
        ops = None
        if options.dynamic_linear:
            ops = sorted({n.op_type for n in onnx.load(str(prepared), load_external_data=False).graph.node}
                         - {"Gemm", "MatMul"})
        quantize_static(
            str(prepared), str(static_out), _Reader(name, calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
            per_channel=options.per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=methods[options.calibration],
            nodes_to_exclude=sensitive_nodes(prepared) if options.keep_ends_float else None,
            extra_options=extra)
        if options.dynamic_linear:
            from onnxruntime.quantization import quantize_dynamic

            quantize_dynamic(str(static_out), str(out_path), op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
    _copy_metadata(fp32_path, out_path, {
        "quantization": f"ort-static-int8 ({options.calibration}, "
                        f"{'per-channel' if options.per_channel else 'per-tensor'}"
                        f"{', dynamic linear' if options.dynamic_linear else ''}"
                        f"{', 7-bit weights' if reduce_range else ''})",
        "int8_weight_bits": 7 if reduce_range else 8})
    return out_path


def quantize_dynamic_linear(fp32_path: str | Path, out_path: str | Path, reduce_range: bool | None = None) -> Path:
    """Dynamic int8 for the fully connected layers only (weights int8, activations quantized on the fly);
    ``reduce_range`` as in :class:`QuantOptions`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range = QuantOptions(reduce_range=reduce_range).resolved_reduce_range()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(_without_value_info(fp32_path, Path(tmp) / "in.onnx")), str(prepared),
                          skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(out_path), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
    _copy_metadata(fp32_path, out_path, {
        "quantization": f"ort-dynamic-int8 (linear layers{', 7-bit weights' if reduce_range else ''})",
        "int8_weight_bits": 7 if reduce_range else 8})
    return Path(out_path)


def _copy_metadata(src: str | Path, dst: str | Path, extra: dict) -> None:
    """Carry the plainnet metadata (class names, preprocessing) over to the quantized file."""
    import json

    import onnx

    from .export import METADATA_KEY

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    info = json.loads(meta.get(METADATA_KEY, "{}"))
    info.update(extra)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(model, str(dst))


def quantize_pt2e(model: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor], *,
                  compile: bool = True) -> nn.Module:
    """torchao PT2E int8 (X86InductorQuantizer, static, per-channel weights), calibrated on
    ``calibration`` batches, batch size left free; returned compiled (its speed comes from Inductor's
    int8 kernels) unless ``compile=False``."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .export import batch_shapes
    from ..models.reparam import reparameterize

    fused = reparameterize(model).float().cpu()
    example = example[:2] if len(example) > 1 else example.expand(2, *example.shape[1:])
    exported = torch.export.export(fused, (example,), dynamic_shapes=batch_shapes(), strict=False).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    return compile_int8(converted) if compile else converted


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e leaves the float weights it replaced with int8 constants attached; drop them so the
    saved program is int8-sized (4x smaller) rather than float + int8."""
    used = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    names = [n for n, _ in graph_module.named_parameters()] + [n for n, _ in graph_module.named_buffers()]
    for name in names:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attr)


class _FrozenCompiled(nn.Module):
    """A PT2E int8 module under ``torch.compile`` with Inductor's freezing on, which is what lets it fuse
    quantize/conv/dequantize into oneDNN int8 kernels (without freezing it runs no faster than fp32)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.compiled = torch.compile(module, dynamic=True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):  # every (re)compilation, not just the first
            return self.compiled(x)


def compile_int8(module: nn.Module) -> nn.Module:
    """Compile a PT2E-quantized module for fast CPU inference (the first call compiles)."""
    return _FrozenCompiled(module)
