"""How a loaded model runs: one object per saved form, with one interface.

Every command that runs a model (predict, eval, serve, bench, export, quantize, compress) asks its
backend what it can do -- run a batch, be explained with Grad-CAM, take other input sizes, hand over the
PyTorch model as built -- and never branches on the name of the form. A new saved form is a new
:class:`Backend` here and a loader in :func:`plainnet.evaluation.inference.load_inference_model`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Backend", "TorchBackend", "ProgramBackend", "OnnxBackend"]


class Backend:
    """A model ready to compute logits from normalized ``(N, 3, S, S)`` float input."""

    #: The saved form, as records and responses name it: ``train``/``deploy`` (a checkpoint), ``pt2``, ``onnx``.
    form: str = ""
    #: What executes it: ``torch`` or ``onnxruntime``.
    runtime: str = "torch"
    #: Exports without a dynamic batch take exactly this many images per call (``None``: any number).
    fixed_batch: int | None = None
    #: The input size is fixed (an ONNX graph): no multi-scale evaluation.
    fixed_size: bool = False
    #: The PyTorch model as plainnet built it (a checkpoint), which export, quantization, pruning and
    #: Grad-CAM start from; ``None`` for an exported file.
    built: nn.Module | None = None
    device: torch.device = torch.device("cpu")

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs the model as built (its convolution modules), not an exported program."""
        return self.built is not None

    @property
    def training_form(self) -> bool:
        """The model as built in its training structure (RepVGG's branches, VGG's BatchNorms): what
        pruning and fine-tuning start from."""
        from ..models import is_deployed

        return self.built is not None and not is_deployed(self.built)

    @property
    def params(self) -> int | None:
        return sum(p.numel() for p in self.built.parameters()) if self.built is not None else None

    def torch_module(self) -> nn.Module | None:
        """A PyTorch module computing the logits -- the model as built, or an exported program's graph
        -- for timing it with PyTorch's backends; ``None`` when the form is not PyTorch."""
        return self.built

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32, on the CPU) for one batch this backend accepts."""
        raise NotImplementedError

    def timed_call(self, x: torch.Tensor) -> Callable[[], object]:
        """A call on ``x`` with as little around it as possible, for benchmarks."""
        return lambda: self.run(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`run`, split into fixed-size batches where the backend takes only those."""
        if self.fixed_batch and len(x) != self.fixed_batch:
            return torch.cat([self.run(x[i : i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)])
        return self.run(x)


class TorchBackend(Backend):
    """A plainnet checkpoint (training or fused form), run fused: one 3x3 conv per RepVGG block, in
    channels_last on a CPU. The model as loaded stays unchanged for Grad-CAM and export."""

    runtime = "torch"

    def __init__(self, module: nn.Module, device: torch.device = torch.device("cpu")):
        from ..models import is_deployed

        self.built, self.device = module, device
        self.form = "deploy" if is_deployed(module) else "train"
        self._fused: nn.Module | None = None

    def _fast(self) -> nn.Module:
        if self._fused is None:  # the same function at deploy speed
            from ..layers import Reparameterizable
            from ..models.reparam import reparameterize

            fused = self.built
            if any(isinstance(m, Reparameterizable) for m in fused.modules()):
                fused = reparameterize(fused)
            if self.device.type == "cpu":
                fused = fused.to(memory_format=torch.channels_last)
            self._fused = fused
        return self._fused

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self._fast()(x.to(self.device)).float().cpu()


class ProgramBackend(Backend):
    """A ``.pt2`` program (``torch.export``), run as exported: its graph keeps its own layout."""

    form, runtime = "pt2", "torch"

    def __init__(self, program: nn.Module, fixed_batch: int | None = None):
        self.program, self.fixed_batch = program, fixed_batch

    def torch_module(self) -> nn.Module:
        return self.program

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x).float().cpu()


class OnnxBackend(Backend):
    """An ONNX export (fp32 or int8) in an onnxruntime session; its input size is fixed."""

    form, runtime, fixed_size = "onnx", "onnxruntime", True

    def __init__(self, session, fixed_batch: int | None = None):
        self.session, self.fixed_batch = session, fixed_batch
        self.input_name = session.get_inputs()[0].name

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.float().cpu().numpy()})[0])

    def timed_call(self, x: torch.Tensor) -> Callable[[], object]:
        session, feed = self.session, {self.input_name: x.float().numpy()}
        return lambda: session.run(None, feed)
