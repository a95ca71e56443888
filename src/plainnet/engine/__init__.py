"""Training: config, recipe, the Lightning task and the ``train`` flow (imports Lightning)."""

from ..config import RunConfig, apply_overrides, load_config
from .train import TrainResult, train

__all__ = ["RunConfig", "TrainResult", "apply_overrides", "load_config", "train"]
