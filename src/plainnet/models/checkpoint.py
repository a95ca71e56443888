"""plainnet checkpoints: architecture, form and weights (and metadata such as class names and
preprocessing) in one file, written atomically and read without unpickling anything but tensors and plain
data (:mod:`plainnet.model_files`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..errors import WeightsError
from ..files import atomic_torch_save
from ..model_files import read_torch_file
from .create import create_model
from .structure import resize_to_state_dict
from .weights import is_deployed, load_weights

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "load_model"]

CHECKPOINT_FORMAT = "plainnet"


def save_checkpoint(model: nn.Module, path: str | Path, **meta) -> Path:
    """Write ``model`` as a plainnet checkpoint (architecture + weights + ``meta``), atomically.

    Written by :func:`~plainnet.files.atomic_torch_save`: an interrupted save never leaves a truncated
    checkpoint where a good one was.
    """
    arch = getattr(model, "arch", None)
    if not arch:
        raise WeightsError("only models built by create_model can be saved as plainnet checkpoints")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": dict(arch),
        "deploy": is_deployed(model),
        "pruned": bool(getattr(model, "pruned", False)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **meta,
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict:
    """The raw payload of a plainnet checkpoint (``arch``, ``state_dict``, ``deploy`` and metadata)."""
    path = Path(path)
    payload = read_torch_file(path)
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is not a plainnet checkpoint (no architecture inside); build the model with "
            "create_model(name, weights=path) instead"
        )
    if not isinstance(payload.get("arch"), Mapping) or not isinstance(payload["arch"].get("name"), str) \
            or not isinstance(payload.get("state_dict"), Mapping):
        raise WeightsError(f"{path} is a damaged plainnet checkpoint: its architecture or weights record is missing")
    return dict(payload)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from a plainnet checkpoint (architecture, form and weights, strictly), in eval
    mode, ready for inference (call ``.train()`` to fine-tune it)."""
    payload = load_checkpoint(path)
    arch = dict(payload["arch"])
    name = arch.pop("name")
    if payload.get("pruned"):
        model = create_model(name, deploy=bool(payload.get("deploy")), **arch)
        resize_to_state_dict(model, payload["state_dict"])
        load_weights(model, payload["state_dict"])
        return model.eval()
    model = create_model(name, weights=payload["state_dict"], deploy=bool(payload.get("deploy")), **arch)
    return model.eval()
