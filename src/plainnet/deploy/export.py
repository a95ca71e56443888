"""Export a trained model for deployment: re-parameterize, export to ONNX or ``torch.export`` (.pt2),
check the export against PyTorch, and embed class names and preprocessing in the file.

ONNX uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``; the legacy exporter fails on
VGG's adaptive pooling at small inputs); TorchScript is deprecated and not offered. The metadata key
``plainnet`` (ONNX ``metadata_props``; a ``plainnet.json`` extra file in .pt2) holds
``{"classes", "preprocess", "config", "source"}``, so ``plainnet predict model.onnx`` needs nothing else.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import EquivalenceError, PlainnetError
from ..model_files import METADATA_KEY, onnx_session, read_pt2
from ..models.reparam import Equivalence, reparameterize, verify_equivalence

__all__ = ["ExportResult", "export_onnx", "export_pt2", "onnx_op_histogram", "pt2_op_histogram",
           "ort_callable", "METADATA_KEY"]

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    format: str
    parity: Equivalence
    ops: Counter = field(default_factory=Counter)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def ort_callable(session):
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().float().cpu().numpy()})[0])

    return run


def onnx_op_histogram(path: str | Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def pt2_op_histogram(program) -> Counter:
    return Counter(str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                   for n in program.graph.nodes if n.op == "call_function")


def _prepare(model: nn.Module) -> nn.Module:
    fused = reparameterize(model)  # a copy, in eval mode; plain models pass through unchanged
    return fused.float().to("cpu").to(memory_format=torch.contiguous_format)


def batch_shapes(dynamic_batch: bool = True):
    """``dynamic_shapes`` for a one-input model: a free batch dimension, or ``None`` for a fixed one."""
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, *, metadata: dict | None = None,
                dynamic_batch: bool = False, rtol: float = 1e-4) -> ExportResult:
    """Fuse ``model``, export it to ONNX at ``path``, and verify onnxruntime's outputs on ``example``
    (real preprocessed images, ideally) against PyTorch's; raises past ``rtol``."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fused = _prepare(model)
    x = example[:1] if not dynamic_batch else example
    try:
        torch.onnx.export(fused, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"],
                          dynamic_shapes=batch_shapes(dynamic_batch), verbose=False)
    except Exception as e:  # the exporter raises many types; the user needs the first line
        raise PlainnetError(f"ONNX export failed: {str(e).strip().splitlines()[0][:300]}") from None
    # The exporter may write the weights to a side file; the saved model carries them inline (one file
    # to hand around; every plainnet model is far below protobuf's 2 GiB), so the side file goes.
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    side_files = {path.parent / ExternalDataInfo(t).location
                  for t in onnx.load(str(path), load_external_data=False).graph.initializer if uses_external_data(t)}
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata or {})
    onnx.save(proto, str(path))
    for side in side_files - {path}:
        side.unlink(missing_ok=True)
    parity = _check(fused, ort_callable(onnx_session(path)), example, dynamic_batch, rtol, "ONNX")
    return ExportResult(path, "onnx", parity, onnx_op_histogram(path))


def export_pt2(model: nn.Module, path: str | Path, example: torch.Tensor, *, metadata: dict | None = None,
               dynamic_batch: bool = False, rtol: float = 1e-5) -> ExportResult:
    """Fuse ``model``, save it as a ``torch.export`` program (.pt2), reload it and verify its outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fused = _prepare(model)
    x = (example if dynamic_batch else example[:1]).clone()  # a view would save its whole storage
    program = torch.export.export(fused, (x,), dynamic_shapes=batch_shapes(dynamic_batch), strict=False)
    info = {**(metadata or {}), "fixed_batch": None if dynamic_batch else 1}
    torch.export.save(program, str(path), extra_files={f"{METADATA_KEY}.json": json.dumps(info)})
    parity = _check(fused, read_pt2(path)[0], example, dynamic_batch, rtol, ".pt2")
    return ExportResult(path, "pt2", parity, pt2_op_histogram(program))


def _check(fused: nn.Module, exported, example: torch.Tensor, dynamic_batch: bool, rtol: float,
           label: str) -> Equivalence:
    """Compare the reloaded export with PyTorch on every example image (one at a time when the export
    has a fixed batch of 1)."""
    # (a lambda even with a dynamic batch: a reloaded torch.export module refuses .eval())
    run = (lambda x: exported(x)) if dynamic_batch else (lambda x: torch.cat([exported(x[i : i + 1]) for i in range(len(x))]))
    try:
        return verify_equivalence(fused, run, example, rtol=rtol)
    except EquivalenceError as e:
        raise EquivalenceError(f"the {label} export differs from PyTorch: {e}") from None
