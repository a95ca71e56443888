"""Model-level re-parameterization and an equivalence check that asserts.

``reparameterize(model)`` turns every :class:`~plainnet.layers.Reparameterizable` part of ``model``
(RepVGG blocks, VGG-BN trunks, conv-BN pairs), wherever it is nested, into its fused inference form,
keeping dtype, device and memory format. ``verify_equivalence`` measures the difference between two
models on the same inputs and raises past a tolerance, instead of printing it.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EquivalenceError
from ..layers import OnlineRepVGGBlock, Reparameterizable, RepVGGBlock

__all__ = ["reparameterize", "to_standard_form", "to_online_form", "verify_equivalence", "Equivalence",
           "default_tolerance"]


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The fused (deploy) form of ``model``, in eval mode. Idempotent.

    Args:
        model: any module containing plainnet blocks (a plainnet model, or one nested in a wrapper).
        inplace: convert ``model`` itself instead of a deep copy.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()  # BN must use its running statistics, which is what fusion folds
    for module in [m for m in model.modules() if isinstance(m, Reparameterizable)]:
        module.reparameterize()
    return model


def to_standard_form(model: nn.Module) -> int:
    """Replace, in place, every online-form RepVGG block of ``model`` by the standard three-branch block
    that computes the same in eval mode (:meth:`~plainnet.layers.OnlineRepVGGBlock.to_standard`);
    returns how many were replaced. The model then records ``train_form: standard``."""
    return _convert_blocks(model, OnlineRepVGGBlock, OnlineRepVGGBlock.to_standard, "standard")


def to_online_form(model: nn.Module) -> int:
    """The inverse of :func:`to_standard_form`: every standard-form RepVGG block becomes the online block
    computing the same in eval mode (:meth:`~plainnet.layers.OnlineRepVGGBlock.from_standard`), so
    standard-form weights (ImageNet's, a checkpoint) can start an online-form run."""
    return _convert_blocks(model, RepVGGBlock, OnlineRepVGGBlock.from_standard, "online")


def _convert_blocks(model: nn.Module, kind: type, convert, form: str) -> int:
    blocks = [(name, m) for name, m in model.named_modules() if type(m) is kind and not m.deployed]
    for name, block in blocks:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, convert(block))
    if blocks and isinstance(getattr(model, "arch", None), dict):
        model.arch = {**model.arch, "train_form": form}
    if blocks and hasattr(model, "train_form"):
        model.train_form = form
    return len(blocks)


@dataclass(frozen=True)
class Equivalence:
    max_abs: float
    #: ``max_abs / max|reference|``: scale-free, so one tolerance serves logits of any size.
    rel: float
    tolerance: float

    def __str__(self) -> str:
        return f"max abs diff {self.max_abs:.3g}, relative {self.rel:.3g} (tolerance {self.tolerance:.1g})"


def default_tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}.get(dtype, 1e-5)


@contextlib.contextmanager
def _no_tf32():
    """cuDNN convolutions and CUDA matmuls in full fp32 inside, the settings restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def verify_equivalence(
    reference: nn.Module,
    candidate: nn.Module | callable,
    inputs: torch.Tensor,
    *,
    rtol: float | None = None,
) -> Equivalence:
    """Compare ``candidate(inputs)`` with ``reference(inputs)``; raise :class:`EquivalenceError` if the
    relative error exceeds ``rtol`` (default: by the inputs' dtype, 1e-5 for fp32).

    Both modules are put in eval mode. ``candidate`` may be any callable (an ONNX session wrapper...).
    On CUDA both run in true fp32: TF32 convolutions (cuDNN's default, ~1e-3 relative error on an H100)
    would hide or fake a difference of the fusion itself.
    """
    tol = default_tolerance(inputs.dtype) if rtol is None else rtol
    reference.eval()
    if isinstance(candidate, nn.Module):
        candidate.eval()
    with _no_tf32():
        ref = reference(inputs).float()
        out = torch.as_tensor(candidate(inputs)).float().to(ref.device)
    if out.shape != ref.shape:
        raise EquivalenceError(f"output shapes differ: {tuple(out.shape)} vs {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        raise EquivalenceError("candidate output has NaN or Inf")
    max_abs = (out - ref).abs().max().item()
    result = Equivalence(max_abs, max_abs / max(ref.abs().max().item(), 1e-12), tol)
    if not result.rel <= tol:
        raise EquivalenceError(f"models differ: {result}")
    return result
