"""Model inspection: parameters, MACs, activation memory and a per-layer table.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 x MACs); activation
memory is the size of every leaf module's output for one forward pass. A model on the ``meta``
device is summarized without allocating or computing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError

__all__ = ["LayerInfo", "ModelSummary", "summarize", "count_params"]


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    input_size: tuple[int, ...]
    params: int
    trainable_params: int
    macs: int
    activation_bytes: int
    param_bytes: int
    layers: list[LayerInfo]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input_shape(input_size: int | tuple[int, ...], in_chans: int) -> tuple[int, ...]:
    if isinstance(input_size, int):
        return (in_chans, input_size, input_size)
    if len(input_size) == 2:
        return (in_chans, *input_size)
    return tuple(input_size)


@torch.no_grad()
def summarize(
    model: nn.Module, input_size: int | tuple[int, ...] = 224, *, batch_size: int = 1
) -> ModelSummary:
    """Summarize ``model`` for inputs of ``input_size`` (an int, ``(H, W)`` or ``(C, H, W)``).

    The forward pass runs in eval mode on the model's own device and dtype; the model's training
    flag is restored afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    in_chans = getattr(model, "arch", None) and model.arch.get("in_chans") or 3
    shape = (batch_size, *_input_shape(input_size, in_chans))

    root = type(model).__name__
    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}
    outputs: dict[str, tuple[int, ...]] = {}
    act_bytes = 0

    def hook(name):
        def fn(_module, inputs, out):
            nonlocal act_bytes
            if isinstance(out, torch.Tensor):
                outputs[name] = tuple(out.shape)
                inp = inputs[0] if inputs else None
                if not (out is inp or out._base is inp):  # in-place ops and views allocate nothing
                    act_bytes += out.numel() * out.element_size()

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves.items()]
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    except RuntimeError as e:  # e.g. an input smaller than the model's downsampling allows
        if "size" not in str(e).lower():
            raise
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{type(model).__name__} cannot run on a {'x'.join(map(str, shape[2:]))} input "
                          f"({first})") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    flops = counter.get_flop_counts()
    layers = [
        LayerInfo(
            name=n,
            kind=type(m).__name__,
            output_shape=outputs.get(n, ()),
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            macs=sum(flops.get(f"{root}.{n}", {}).values()) // 2,
        )
        for n, m in leaves.items()
        if n in outputs
    ]
    return ModelSummary(
        input_size=shape[1:],
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        macs=counter.get_total_flops() // 2,
        activation_bytes=act_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters())
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        layers=layers,
    )
