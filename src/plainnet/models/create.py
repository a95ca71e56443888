"""``create_model(name, ...)``: a registered plainnet model, or a torchvision/timm classifier by name,
with fresh, local or published weights."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError, UnknownModelError, WeightsError
from .foreign import ForeignClassifier
from .registry import EXTERNAL_PREFIXES, build, plain_arch
from .pretrained import IMAGENET, pretrained_state_dict
from .weights import detect_deploy_form, load_weights, read_state_dict

__all__ = ["create_model"]


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    pretrained: bool = False,
    weights: str | Path | dict | None = None,
    deploy: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or ``torchvision.NAME`` / ``timm.NAME`` for those libraries'
            classifiers (randomly initialized, or from local ``weights``).
        num_classes: size of the classifier output (0: no classifier, pre-logit features).
        in_chans: input channels.
        pretrained: load the published ImageNet weights (:mod:`plainnet.models.pretrained`: timm's files
            on the Hugging Face hub for RepVGG, torchvision's for VGG and ``torchvision.NAME``, timm's own
            for ``timm.NAME``), from the libraries' caches, downloaded where the network allows. With
            ``num_classes != 1000`` the backbone is loaded and the head is new. The weights'
            preprocessing is kept as ``model.pretrained_cfg``.
        weights: a checkpoint path or state dict in any dialect :func:`load_weights` reads. Its form
            (training or fused) is detected from the keys unless ``deploy`` is given.
        deploy: build the fused inference structure directly (one 3x3 conv per RepVGG block, BN folded
            into VGG convs). ``None`` means training form, or the checkpoint's form when ``weights`` is set.
        **kwargs: architecture options (``small_input``, ``head``, ``drop_rate``, ``norm_layer``...).
    """
    if name.startswith(EXTERNAL_PREFIXES):
        return _external(name, num_classes, in_chans, weights=weights, pretrained=pretrained, **kwargs)
    arch = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if weights is not None or pretrained:
        source = None
        if weights is not None:
            state = read_state_dict(weights)
        else:
            state, source = pretrained_state_dict(name)
        if deploy is None:
            deploy = detect_deploy_form(state, {"name": name, **arch})
        model = build(name, deploy, **arch)
        load_weights(model, state, exclude_head=source is not None and num_classes != 1000)
        if source is not None:
            model.pretrained_cfg = source.model_cfg()
        return model
    return build(name, bool(deploy), **arch)


def _external(name: str, num_classes: int, in_chans: int, *, weights, pretrained: bool, **kwargs) -> nn.Module:
    """A torchvision or timm classifier by name (``torchvision.resnet50``, ``timm.convnext_tiny``), so the
    usual baselines train and compare through the same pipeline, held in a :class:`ForeignClassifier`.
    ``pretrained=True``: torchvision's weights enum's ``DEFAULT`` file (through torch hub, checked, read
    as tensors only), or timm's own ``pretrained=True``; local ``weights`` are loaded strictly."""
    if pretrained and weights is not None:
        raise WeightsError(f"{name}: pass pretrained=True or weights=PATH, not both")
    arch = plain_arch({"name": name, "num_classes": num_classes, "in_chans": in_chans, **kwargs})
    if pretrained and name.startswith("torchvision."):
        return _torchvision_pretrained(name, arch, **kwargs)
    if pretrained:
        return _timm_pretrained(name, arch, **kwargs)
    model = ForeignClassifier(_library_model(name, num_classes, in_chans, **kwargs), arch)
    if weights is not None:
        load_weights(model, weights)  # (the library's own keys or a plainnet checkpoint of it)
    return model


def _library_model(name: str, num_classes: int, in_chans: int, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """The library's own module for ``torchvision.NAME`` / ``timm.NAME`` (timm's published weights with
    ``pretrained``)."""
    library, _, model_name = name.partition(".")
    if library == "torchvision":
        import torchvision

        if in_chans != 3:
            raise ValueError("torchvision models take 3 input channels")
        if model_name not in torchvision.models.list_models():
            close = difflib.get_close_matches(model_name, torchvision.models.list_models(), n=3)
            hint = f"; did you mean {', '.join('torchvision.' + c for c in close)}?" if close else ""
            raise UnknownModelError(f"unknown torchvision model {model_name!r}{hint}")
        return _with_options(name, kwargs, torchvision.models.get_model, model_name, weights=None,
                             num_classes=num_classes)
    try:
        import timm
    except ImportError:
        raise UnknownModelError(f"{name} needs timm: pip install timm") from None
    if not timm.is_model(model_name):
        raise UnknownModelError(f"unknown timm model {model_name!r}")
    return _with_options(name, kwargs, timm.create_model, model_name, pretrained=pretrained, num_classes=num_classes,
                         in_chans=in_chans)


def _with_options(name: str, options: dict, build, *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs, **options)``; an option the library's model does not take (e.g. plainnet's
    ``small_input``) is one line naming it."""
    try:
        return build(*args, **kwargs, **options)
    except TypeError as e:
        if not options or "argument" not in str(e):
            raise
        raise ConfigError(f"{name} does not take the option(s) {', '.join(sorted(options))}: those are "
                          "plainnet models' architecture options") from None


def _torchvision_pretrained(name: str, arch: dict, **kwargs) -> nn.Module:
    net = _library_model(name, 1000, arch["in_chans"], **kwargs)
    state, source = pretrained_state_dict(name)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{source.filename} does not fit {name}: {len(missing)} missing, {len(unexpected)} "
                           f"unexpected keys (e.g. {(missing or unexpected)[0]})")
    num_classes = arch["num_classes"]
    if num_classes != 1000:  # a new head for the class count
        head_name, head = [(n, m) for n, m in net.named_modules()
                           if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.shape[0] == 1000][-1]
        new = (nn.Linear(head.in_features, num_classes) if isinstance(head, nn.Linear) else
               nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding))
        parent, _, leaf = head_name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, new.to(next(head.parameters()).dtype))
    return ForeignClassifier(net, arch, pretrained_cfg=source.model_cfg())


def _timm_pretrained(name: str, arch: dict, **kwargs) -> nn.Module:
    model_name = name.partition(".")[2]
    try:
        net = _library_model(name, arch["num_classes"], arch["in_chans"], pretrained=True, **kwargs)
    except (UnknownModelError, ConfigError):  # (not a download problem)
        raise
    except Exception as e:  # noqa: BLE001 - offline, no published file, no network: one line
        import timm

        cfg = timm.models.get_pretrained_cfg(model_name)
        where = (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else
                 getattr(cfg, "url", None) or "timm's pretrained config")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{name}: timm could not load its pretrained weights from {where} ({first}); "
                           "with HF_HUB_OFFLINE=1 they must already be in the Hugging Face cache") from None
    cfg = net.pretrained_cfg  # (timm's own record, left as timm made it)
    side = int(cfg.get("input_size", (3, 224, 224))[-1])
    return ForeignClassifier(net, arch, pretrained_cfg={
        "source": f"https://huggingface.co/{cfg.get('hf_hub_id')}",
        "preprocess": {"image_size": side, "crop_ratio": float(cfg.get("crop_pct", 0.875)),
                       "mean": list(cfg.get("mean", IMAGENET["mean"])), "std": list(cfg.get("std", IMAGENET["std"]))}})
