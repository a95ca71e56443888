"""State dicts in every dialect, loaded strictly (plainnet's own checkpoint files: :mod:`.checkpoint`).

Reads: plainnet's own checkpoints; the official RepVGG repository's keys in training and deploy form;
timm's RepVGG keys (renamed); torchvision's VGG keys (plainnet's VGG uses them natively); wrappers
(``state_dict`` / ``model`` nesting, ``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``,
``model.`` from a LightningModule), in ``.pt``/``.pth``/``.ckpt`` or ``.safetensors`` files, opened by
:mod:`plainnet.model_files` (never unpickling anything but tensors and plain data).

Loading is strict: a missing, unexpected or mis-shaped key is a :class:`WeightsError` naming them. The
one tolerated gap is BatchNorm's ``num_batches_tracked`` counter, which older checkpoints omit and
which does not affect the function computed (plainnet never uses cumulative-average BN momentum).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from ..model_files import read_safetensors, read_torch_file
from .registry import EXTERNAL_PREFIXES, build

__all__ = [
    "LoadReport",
    "read_state_dict",
    "convert_dialect",
    "load_weights",
    "checkpoint_form",
    "detect_deploy_form",
    "is_deployed",
]

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "weights")
_PREFIXES = ("module.", "_orig_mod.", "model.")
# timm's RepVGG (byobnet) names -> official RepVGG names, applied to dot-separated keys.
_TIMM_RULES = [
    (re.compile(r"^stem\."), "stage0."),
    (re.compile(r"^stages\.(\d+)\."), lambda m: f"stage{int(m.group(1)) + 1}."),
    (re.compile(r"\.conv_kxk\."), ".rbr_dense."),
    (re.compile(r"\.conv_1x1\."), ".rbr_1x1."),
    (re.compile(r"\.identity\."), ".rbr_identity."),
    (re.compile(r"\.attn\.fc1\."), ".se.down."),
    (re.compile(r"\.attn\.fc2\."), ".se.up."),
    (re.compile(r"\.reparam_conv\."), ".rbr_reparam."),
    (re.compile(r"^head\.fc\."), "linear."),
]


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the dialect it recognized and any conversion it applied."""

    dialect: str
    form: str  # "train" or "deploy"
    converted: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)


def read_state_dict(source: str | Path | Mapping) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` from a checkpoint file or a (possibly nested, prefixed) mapping."""
    where = "checkpoint"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        obj = read_safetensors(path) if path.suffix.lower() == ".safetensors" else read_torch_file(path)
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    obj = _unwrap(obj)
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{where} holds no named tensors: not a model checkpoint")
    return _strip_prefixes(tensors)


def _unwrap(obj: Mapping) -> Mapping:
    while not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def convert_dialect(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a recognized foreign dialect to plainnet's keys. Returns ``(state_dict, dialect)``."""
    keys = list(sd)
    if any(k.startswith(("stem.", "stages.")) for k in keys) and any(
        ".conv_kxk." in k or ".reparam_conv." in k for k in keys
    ):
        out = {}
        for k, v in sd.items():
            for pattern, repl in _TIMM_RULES:
                k = pattern.sub(repl, k)
            out[k] = v
        return out, "timm"
    if any(k.startswith("stage0.") for k in keys):
        return dict(sd), "repvgg-official"
    if any(k.startswith("features.") for k in keys):
        return dict(sd), "torchvision"
    return dict(sd), "plainnet"


def is_deployed(model: nn.Module) -> bool:
    """True when every re-parameterizable part of ``model`` is in its fused form."""
    from ..layers import Reparameterizable

    parts = [m for m in model.modules() if isinstance(m, Reparameterizable)]
    return bool(parts) and all(m.deployed for m in parts)


def _keys_without_counters(keys) -> set[str]:
    return {k for k in keys if not k.endswith("num_batches_tracked")}


def checkpoint_form(state: Mapping[str, torch.Tensor], arch: dict) -> str:
    """``"train"``, ``"deploy"`` or ``"same"`` (both forms have the same keys, e.g. VGG without BN).

    Compares the (renamed) keys with both structures of ``arch``, built on the meta device (no memory,
    no compute).
    """
    if arch["name"].startswith(EXTERNAL_PREFIXES):
        return "same"  # torchvision / timm models have one form
    keys = _keys_without_counters(convert_dialect(state)[0])
    if repvgg_training_form(keys) not in (None, arch.get("train_form", "standard")):
        return "train"  # RepVGG's other training form, converted on the way in (load_weights)
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    with torch.device("meta"):
        deploy_keys = _keys_without_counters(build(arch["name"], deploy=True, **kwargs).state_dict())
        train_keys = _keys_without_counters(build(arch["name"], deploy=False, **kwargs).state_dict())
    if deploy_keys == train_keys:
        return "same"
    # Not an exact match for either: pick the closer one so the strict load names the difference.
    return "deploy" if len(keys ^ deploy_keys) < len(keys ^ train_keys) else "train"


def repvgg_training_form(keys) -> str | None:
    """``"standard"`` for RepVGG keys of the three-branch training form (official or timm names),
    ``"online"`` for those of :class:`~plainnet.layers.OnlineRepVGGBlock`, else None."""
    if any(".rbr_dense." in k or ".conv_kxk." in k for k in keys):
        return "standard"
    return "online" if any(k.endswith(".scale_3x3") for k in keys) else None


def detect_deploy_form(state: Mapping[str, torch.Tensor], arch: dict) -> bool:
    """Whether ``state`` fits the fused (deploy) structure of ``arch`` rather than the training one."""
    return checkpoint_form(state, arch) == "deploy"


def _head_keys(model: nn.Module) -> set[str]:
    name = getattr(model, "classifier_name", None)
    if not name:
        return set()
    return {f"{name}.{k}" for k in model.get_submodule(name).state_dict()}


def _check_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], ignore: set[str]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and k not in ignore and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own and k not in ignore]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and k not in ignore and sd[k].shape != own[k].shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        hint = ""
        head = _head_keys(model)
        if head and all(k in head for k in missing + unexpected) and all(s.split()[0] in head for s in shapes):
            hint = " -- only the classifier differs; fine-tune with exclude_head=True for a new head"
        raise WeightsError("checkpoint does not match the model: " + "; ".join(problems) + hint)


def load_weights(
    model: nn.Module, source: str | Path | Mapping, *, exclude_head: bool = False
) -> LoadReport:
    """Load a checkpoint of any supported dialect into ``model``, strictly.

    A fused (deploy-form) checkpoint loaded into a training-form model re-parameterizes the model in
    place first; a training-form checkpoint loaded into a fused model is fused on the way in, and a
    RepVGG checkpoint of the other training form (standard or online) is converted on the way in (exact
    in eval mode: :func:`~plainnet.models.reparam.to_online_form`, ``to_standard_form``).

    Args:
        model: a plainnet model (from :func:`create_model`).
        source: a path, or a state dict (possibly wrapped/prefixed).
        exclude_head: keep the model's own classifier (fine-tuning to a new class count); every other
            tensor must still match.
    """
    from .reparam import reparameterize, to_online_form, to_standard_form

    from .foreign import ForeignClassifier

    state = read_state_dict(source)
    if isinstance(model, ForeignClassifier):  # the library's own keys, or a plainnet checkpoint of it
        state = ForeignClassifier.own_keys(state)
    sd, dialect = convert_dialect(state)
    arch = getattr(model, "arch", None)
    form = checkpoint_form(sd, arch) if arch else "same"
    report = LoadReport(dialect=dialect, form="train" if form == "same" else form)
    ignore = _head_keys(model) if exclude_head else set()
    if exclude_head:
        report.skipped_head = sorted(k for k in sd if k in ignore)
        sd = {k: v for k, v in sd.items() if k not in ignore}

    own, held = getattr(model, "train_form", "standard"), repvgg_training_form(sd)  # RepVGG's training forms
    if form == "deploy" and not is_deployed(model):
        reparameterize(model, inplace=True)
        report.converted.append("model re-parameterized in place to match the fused checkpoint")
    elif form == "train" and is_deployed(model):
        sd = _fuse_state_dict(model, sd, ignore)
        report.converted.append("training-form checkpoint fused to match the deploy-form model")
    elif form == "train" and held not in (None, own):
        sibling = _training_sibling(model, sd, ignore)
        (to_online_form if own == "online" else to_standard_form)(sibling)
        sd = {k: v for k, v in sibling.state_dict().items() if k not in ignore}  # the model keeps its own head
        report.converted.append(f"{held}-form checkpoint converted to the {own} form")

    _check_strict(model, sd, ignore)
    model.load_state_dict(sd, strict=False)  # strictness was checked above, with better messages
    log.debug("loaded %s weights (%s form)%s", dialect, report.form,
             f"; {'; '.join(report.converted)}" if report.converted else "")
    return report


def _fuse_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], ignore: set[str]) -> dict:
    from .reparam import reparameterize

    return reparameterize(_training_sibling(model, sd, ignore), inplace=True).state_dict()


def _training_sibling(model: nn.Module, sd: dict[str, torch.Tensor], ignore: set[str]) -> nn.Module:
    """A training-form model of ``model``'s architecture (in the RepVGG training form ``sd`` holds),
    holding ``sd``, loaded strictly."""
    arch = getattr(model, "arch", None)
    if not arch:
        raise WeightsError("a training-form checkpoint needs a training-form model: build it with deploy=False")
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    held = repvgg_training_form(sd)
    if held is not None:  # RepVGG: the training form the checkpoint holds
        kwargs["train_form"] = held
    train = build(arch["name"], deploy=False, **kwargs)
    _check_strict(train, sd, ignore)
    train.load_state_dict(sd, strict=False)
    return train
