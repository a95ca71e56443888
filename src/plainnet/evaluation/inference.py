"""Load a model from any saved form for inference, with the class names and preprocessing that travel
with it, and turn image files into model input.

Saved forms: a run directory (its ``best.pt``), a plainnet checkpoint (training or fused form), and
an exported ONNX file (class names and preprocessing in its metadata). The user never retypes either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.augment import center_crop, normalize
from ..data.datamodule import Preprocess
from ..errors import WeightsError

__all__ = ["InferenceModel", "load_inference_model", "read_image", "resolve_checkpoint"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its ``best.pt``; anything else is taken as a file."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise WeightsError(f"{p} holds no best.pt or last.pt: not a finished plainnet run directory")
    if not p.exists():
        raise WeightsError(f"model not found: {p}")
    return p


@dataclass
class InferenceModel:
    """A classifier ready for inference: ``model(x)`` maps normalized ``(N, 3, S, S)`` floats to logits."""

    classes: list[str]
    preprocess: Preprocess
    source: Path
    #: ``train`` or ``deploy`` (PyTorch), or ``onnx``.
    form: str
    module: nn.Module | None = None
    session: object | None = None
    device: torch.device = torch.device("cpu")
    #: The training config saved with the checkpoint (data path, split fractions and seed), if any.
    config: dict | None = None

    @property
    def run_dir(self) -> Path | None:
        parent = self.source.parent
        return parent if (parent / "config.yaml").is_file() else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            name = self.session.get_inputs()[0].name
            return torch.from_numpy(self.session.run(None, {name: x.float().cpu().numpy()})[0])
        return self.module(x.to(self.device)).float().cpu()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, side, side)`` images (``side = preprocess.resize_to``) -> normalized input."""
        p = self.preprocess
        return normalize(center_crop(images, p.image_size), p.mean, p.std)


def read_image(path: str | Path, preprocess: Preprocess) -> torch.Tensor:
    """One file -> uint8 ``(3, side, side)``: shorter side resized to ``preprocess.resize_to`` and
    center-cropped square, exactly as the training cache stores it (so eval and predict match training's
    validation). Raises :class:`~plainnet.data.images.BadImageError` for unreadable files."""
    from ..data.images import load_rgb_array

    return torch.from_numpy(np.ascontiguousarray(load_rgb_array(path, preprocess.resize_to))).permute(2, 0, 1)


def load_inference_model(path: str | Path, device: str | torch.device = "cpu") -> InferenceModel:
    """Load a run directory, a plainnet checkpoint or an exported ONNX file for inference."""
    source = resolve_checkpoint(path)
    if source.suffix.lower() == ".onnx":
        return _load_onnx(source)
    from ..models import is_deployed, load_model
    from ..models.weights import load_checkpoint

    payload = load_checkpoint(source)
    if "classes" not in payload or "preprocess" not in payload:
        raise WeightsError(f"{source} has no class names or preprocessing: use a checkpoint written by "
                           "plainnet train (best.pt, last.pt) or plainnet export")
    model = load_model(source).to(device)
    return InferenceModel(classes=list(payload["classes"]), preprocess=Preprocess.from_dict(payload["preprocess"]),
                          source=source, form="deploy" if is_deployed(model) else "train", module=model,
                          device=torch.device(device), config=payload.get("config"))


def _load_onnx(source: Path) -> InferenceModel:
    try:
        import onnxruntime as ort
    except ImportError:
        raise WeightsError("reading ONNX files needs onnxruntime: pip install onnxruntime") from None
    try:
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise WeightsError(f"cannot load ONNX model {source}: {str(e).splitlines()[0][:200]}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "plainnet" not in meta:
        raise WeightsError(f"{source} carries no plainnet metadata (class names, preprocessing): export it "
                           "with plainnet export")
    info = json.loads(meta["plainnet"])
    return InferenceModel(classes=list(info["classes"]), preprocess=Preprocess.from_dict(info["preprocess"]),
                          source=source, form="onnx", session=session, config=info.get("config"))
