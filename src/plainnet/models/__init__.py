"""The model zoo: VGG and RepVGG behind one registry, checkpoints in every dialect, inspection."""

from . import repvgg, vgg  # noqa: F401  (registers the builders)
from .base import FeatureExtractor, FeatureInfo, PlainClassifier
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .create import create_model
from .registry import FamilyTraits, list_models, model_entry, register_model, traits_of
from .repvgg import REPVGG_CFGS, RepVGG, RepVGGConfig
from .summary import ModelSummary, count_params, summarize
from .vgg import VGG, VGG_LAYERS, VGGConfig
from .weights import LoadReport, is_deployed, load_weights, read_state_dict

__all__ = [
    "FamilyTraits",
    "FeatureExtractor",
    "FeatureInfo",
    "LoadReport",
    "ModelSummary",
    "PlainClassifier",
    "REPVGG_CFGS",
    "RepVGG",
    "RepVGGConfig",
    "VGG",
    "VGGConfig",
    "VGG_LAYERS",
    "count_params",
    "create_model",
    "is_deployed",
    "list_models",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "model_entry",
    "read_state_dict",
    "register_model",
    "save_checkpoint",
    "summarize",
    "traits_of",
]
