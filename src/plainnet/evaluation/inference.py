"""Load a model from any saved form for inference, with the class names and preprocessing that travel
with it, and turn image files into model input.

Saved forms: a run directory (its ``best.pt``), a plainnet checkpoint (training or fused form), and
an exported ONNX file (class names and preprocessing in its metadata). The user never retypes either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.augment import center_crop, normalize
from ..data.preprocess import Preprocess
from ..errors import ConfigError, WeightsError
from ..run_dir import RunDir
from .backends import Backend, OnnxBackend, ProgramBackend, TorchBackend

__all__ = ["InferenceModel", "load_inference_model", "read_image", "resolve_checkpoint", "sample_images"]

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its ``best.pt``; anything else is taken as a file."""
    p = Path(path)
    if p.is_dir():
        return RunDir(p).weights()
    if not p.exists():
        raise WeightsError(f"model not found: {p}")
    return p


@dataclass
class InferenceModel:
    """A classifier ready for inference: ``model(x)`` maps normalized ``(N, 3, S, S)`` floats to logits,
    through the :class:`~plainnet.evaluation.backends.Backend` of its saved form."""

    classes: list[str]
    preprocess: Preprocess
    source: Path
    backend: Backend
    #: The training config saved with the checkpoint (data path, split fractions and seed), if any.
    config: dict | None = None

    @property
    def run(self) -> RunDir | None:
        """The run directory the model file lies in, if any."""
        return RunDir.of(self.source)

    @property
    def run_dir(self) -> Path | None:
        run = self.run
        return run.path if run else None

    @property
    def form(self) -> str:
        """The saved form's name, for records and messages (ask :attr:`backend` what it can do)."""
        return self.backend.form

    @property
    def module(self) -> nn.Module | None:
        """The PyTorch model as built (a checkpoint), or ``None`` for an exported file."""
        return self.backend.built

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend(x)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, side, side)`` images (``side = preprocess.resize_to``) -> normalized input."""
        p = self.preprocess
        return normalize(center_crop(images, p.image_size), p.mean, p.std)


def read_image(path: str | Path, preprocess: Preprocess, data: bytes | None = None,
               smallest: int = 1) -> torch.Tensor:
    """One file (or, with ``data``, its bytes) -> uint8 ``(3, side, side)``: shorter side resized to
    ``preprocess.resize_to`` and center-cropped square, exactly as the training cache stores it (so eval,
    predict and serve match training's validation). Raises
    :class:`~plainnet.data.images.BadImageError` for unreadable images (and, with ``smallest``, for
    images with a side shorter than that many pixels)."""
    from ..data.images import load_rgb_array

    array = load_rgb_array(path, preprocess.resize_to, smallest=smallest, data=data)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def load_inference_model(path: str | Path, device: str | torch.device = "cpu") -> InferenceModel:
    """Load a run directory, a plainnet checkpoint, a .pt2 or an ONNX export for inference; every file
    is opened by :mod:`plainnet.model_files`, so no code in it can run."""
    source = resolve_checkpoint(path)
    if source.suffix.lower() == ".onnx":
        return _load_onnx(source)
    if source.suffix.lower() == ".pt2":
        return _load_pt2(source)
    from ..models import load_model
    from ..models.base import classifier_of
    from ..models.checkpoint import load_checkpoint

    payload = load_checkpoint(source)
    classes, preprocess = _metadata(payload, source, "checkpoint written by plainnet train (best.pt, last.pt)")
    model = load_model(source).to(device)
    _check_outputs(len(classes), getattr(classifier_of(model), "out_features", None), source)
    _check_run_classes(classes, source)
    return InferenceModel(classes=classes, preprocess=preprocess, source=source,
                          backend=TorchBackend(model, torch.device(device)), config=payload.get("config"))


def _metadata(info, source: Path, expected: str) -> tuple[list[str], Preprocess]:
    """The class names and preprocessing a model file carries, checked: one clear error if either is
    missing or malformed."""
    if not isinstance(info, dict) or "classes" not in info or "preprocess" not in info:
        raise WeightsError(f"{source} carries no class names or preprocessing: use a {expected}")
    classes = info["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise WeightsError(f"{source}: its class list is not a list of names")
    try:
        preprocess = Preprocess.from_dict(info["preprocess"])
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{source}: its preprocessing record is incomplete or malformed") from None
    if preprocess.image_size < 1 or not 0 < preprocess.crop_ratio <= 1 or len(preprocess.mean) != 3 \
            or len(preprocess.std) != 3 or not all(v > 0 for v in preprocess.std):
        raise WeightsError(f"{source}: its preprocessing record is out of range ({preprocess})")
    return list(classes), preprocess


def _check_outputs(n_classes: int, n_outputs, source: Path) -> None:
    if isinstance(n_outputs, int) and n_outputs != n_classes:
        raise WeightsError(f"{source} names {n_classes} classes but its model predicts {n_outputs}: the file "
                           "was edited or assembled from two models")


def _check_run_classes(classes: list[str], source: Path) -> None:
    """A checkpoint inside a run directory must agree with the run's classes.json."""
    run = RunDir.of(source)
    if run is None or not run.classes_file.is_file():
        return
    try:
        run_classes = run.classes()
    except ConfigError as e:
        raise WeightsError(str(e)) from None
    if run_classes != classes:
        raise WeightsError(f"{source} was trained on classes {classes}, but its run directory's classes.json "
                           f"lists {run_classes}: one of them was replaced")


def _load_onnx(source: Path) -> InferenceModel:
    from ..model_files import METADATA_KEY, onnx_session

    session = onnx_session(source)
    meta = session.get_modelmeta().custom_metadata_map
    try:
        info = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
    except json.JSONDecodeError:
        raise WeightsError(f"{source}: its plainnet metadata is not valid JSON") from None
    classes, preprocess = _metadata(info, source, "model exported by plainnet export")
    outputs = session.get_outputs()[0].shape
    _check_outputs(len(classes), outputs[-1] if outputs else None, source)
    if info.get("quantization", "").startswith("ort-") and info.get("int8_weight_bits", 8) == 8:
        from ..cpu import int8_pairs_saturate

        if int8_pairs_saturate():
            log.warning("%s has 8-bit int8 weights, quantized for CPUs with VNNI; this CPU has no VNNI, so its "
                        "int8 kernels can saturate and lose accuracy: quantize it again on this machine "
                        "(plainnet quantize picks 7-bit weights here)", source)
    batch_dim = session.get_inputs()[0].shape[0]
    return InferenceModel(classes=classes, preprocess=preprocess, source=source, config=info.get("config"),
                          backend=OnnxBackend(session, batch_dim if isinstance(batch_dim, int) else None))


def _load_pt2(source: Path) -> InferenceModel:
    from ..model_files import read_pt2

    module, info = read_pt2(source)
    classes, preprocess = _metadata(info, source, "model exported by plainnet export")
    return InferenceModel(classes=classes, preprocess=preprocess, source=source, config=info.get("config"),
                          backend=ProgramBackend(module, info.get("fixed_batch")))


def sample_images(model: InferenceModel, source: str | Path | None = None, n: int = 64,
                  split: str = "train", seed: int = 0) -> torch.Tensor:
    """Up to ``n`` real images as preprocessed model input, for export checks and int8 calibration.

    ``source``: a folder (every image under it, any layout); by default the model's own training data
    (``split`` of the run's split.json, or the saved config's data) when it can be found.
    """
    from ..data.images import BadImageError, list_images

    paths: list[Path] = []
    if source is not None:
        root = Path(source)
        if not root.exists():
            raise WeightsError(f"image folder not found: {root}")
        paths = [p for p in list_images(root) if p.is_file()] if root.is_dir() else [root]
    else:
        paths = _own_images(model, split)
    if not paths:
        return torch.empty(0)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(paths), generator=g).tolist()
    images = []
    for i in order:
        try:
            images.append(read_image(paths[i], model.preprocess))
        except BadImageError:
            continue
        if len(images) == n:
            break
    return model.prepare(torch.stack(images)) if images else torch.empty(0)


def _own_images(model: InferenceModel, split: str) -> list[Path]:
    from ..data.folder import Splits

    record = model.run.split_record() if model.run else None
    if record is not None:
        try:
            splits = Splits.from_json(record)
            return [s.path for s in getattr(splits, split) or splits.train]
        except Exception:  # noqa: BLE001 - the data moved: fall back to the config below
            pass
    path = (model.config or {}).get("data", {}).get("path")
    if path and path != "digits" and Path(path).is_dir():
        from ..data.images import list_images

        return [p for p in list_images(path) if p.is_file()]
    return []
