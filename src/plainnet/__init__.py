"""plainnet: plain convolutional image classifiers (VGG, RepVGG) from folder to deployment.

The public API. Names are imported on first use, so ``import plainnet`` (and ``plainnet --help``)
stays fast and training's Lightning import happens only when training.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "FeatureExtractor": "plainnet.models",
    "create_model": "plainnet.models",
    "draw": "plainnet.models.draw",
    "list_models": "plainnet.models",
    "load_model": "plainnet.models",
    "load_weights": "plainnet.models",
    "save_checkpoint": "plainnet.models",
    "summarize": "plainnet.models",
    "reparameterize": "plainnet.models.reparam",
    "verify_equivalence": "plainnet.models.reparam",
    "PlainnetError": "plainnet.errors",
    "train": "plainnet.engine.train",
    "evaluate": "plainnet.evaluation.evaluate",
    "build_report": "plainnet.evaluation.report",
    "load_inference_model": "plainnet.evaluation.inference",
    "RunConfig": "plainnet.config",
}

__all__ = [
    "FeatureExtractor",
    "PlainnetError",
    "RunConfig",
    "build_report",
    "create_model",
    "draw",
    "evaluate",
    "list_models",
    "load_inference_model",
    "load_model",
    "load_weights",
    "reparameterize",
    "save_checkpoint",
    "summarize",
    "train",
    "verify_equivalence",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'plainnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .models.draw import draw
    from .models.reparam import reparameterize, verify_equivalence
    from .config import RunConfig
    from .engine.train import train
    from .evaluation.evaluate import evaluate
    from .evaluation.inference import load_inference_model
    from .evaluation.report import build_report
    from .errors import PlainnetError
    from .models import (
        FeatureExtractor,
        create_model,
        list_models,
        load_model,
        load_weights,
        save_checkpoint,
        summarize,
    )
