"""Published ImageNet weights by model name, fetched and cached by the libraries that publish them.

Where each plainnet model's weights come from (docs/pretrained.md lists them all):

- RepVGG A0-A2, B0-B3, B1g4/B2g4/B3g4, D2se: timm's files on the Hugging Face hub
  (``timm/repvgg_<v>.rvgg_in1k``, ``model.safetensors``, timm's key layout), through ``huggingface_hub``:
  its cache (``HF_HOME``), its offline switch (``HF_HUB_OFFLINE=1``) and its progress bar. A fresh
  download is checked against the hub's sha256 of the file (the name of the cached blob).
- RepVGG B1g2/B2g2/B3g2: published only in the official RepVGG release (a Google Drive folder, no
  direct links): the file is placed by hand in the torch hub cache, and the error says where.
- VGG 11/13/16/19 +-BN: torchvision's files (download.pytorch.org) through ``torch.hub``: its cache
  (``TORCH_HOME``) and progress bar; the sha256 prefix in the file name is checked on download, into a
  temporary file that is only moved into the cache once it matches.
- ``torchvision.NAME``: the same, from its weights enum's ``DEFAULT``; ``timm.NAME``: timm's own
  ``pretrained=True`` (the hub file of its pretrained config).

Every file is read with :mod:`plainnet.model_files` (tensors only) except timm's, which timm loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WeightsError

__all__ = ["WeightSource", "weight_source", "pretrained_preprocess", "published_names", "fetch",
           "pretrained_state_dict", "download_url"]

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
OFFICIAL_RELEASE = "https://drive.google.com/drive/folders/1Avome4KvNp0Lqh2QwhXO6L5URQjzCjUq"
_TIMM_REPVGG = ("a0", "a1", "a2", "b0", "b1", "b1g4", "b2", "b2g4", "b3", "b3g4", "d2se")
_OFFICIAL_ONLY = ("b1g2", "b2g2", "b3g2")
_VGG = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")


@dataclass(frozen=True)
class WeightSource:
    """Where a model's ImageNet weights are published and what preprocessing they were trained with."""

    model: str
    kind: str  # "hf" (Hugging Face hub), "url" (torch hub download) or "manual" (placed by hand)
    where: str  # the hub repository, the URL, or the release page
    filename: str
    preprocess: dict  # image_size, crop_ratio, mean, std

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.where}" if self.kind == "hf" else self.where

    def model_cfg(self) -> dict:
        """What a model built from these weights keeps as ``model.pretrained_cfg``."""
        return {"source": self.page, "file": self.filename, "preprocess": self.preprocess}

    def cache_path(self) -> Path:
        """Where torch hub keeps (or the user places) a ``url`` or ``manual`` file."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


def _repvgg(variant: str) -> WeightSource:
    name = f"repvgg_{variant}"
    if variant in _OFFICIAL_ONLY:
        return WeightSource(name, "manual", OFFICIAL_RELEASE, f"RepVGG-{variant.upper().replace('G', 'g')}-train.pth",
                            {"image_size": 224, "crop_ratio": 0.875, **IMAGENET})
    size, crop = (320, 1.0) if variant == "d2se" else (224, 0.875)  # timm's pretrained configs
    return WeightSource(name, "hf", f"timm/{name}.rvgg_in1k", "model.safetensors",
                        {"image_size": size, "crop_ratio": crop, **IMAGENET})


def _torchvision(name: str, library_name: str) -> WeightSource:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(library_name).DEFAULT
    except ValueError:
        raise WeightsError(f"{name}: torchvision publishes no weights for {library_name}") from None
    t = weights.transforms()
    crop, resize = t.crop_size[0], t.resize_size[0]
    return WeightSource(name, "url", weights.url, Path(weights.url).name,
                        {"image_size": crop, "crop_ratio": round(crop / resize, 4), "mean": list(t.mean),
                         "std": list(t.std)})


def weight_source(name: str) -> WeightSource | None:
    """The published ImageNet weights of plainnet model or ``torchvision.NAME`` ``name``; ``None`` when
    there are none (``vgg16_dws``, plainnet's own depthwise-separable variant)."""
    if name.startswith("repvgg_") and name[7:] in _TIMM_REPVGG + _OFFICIAL_ONLY:
        return _repvgg(name[7:])
    if name in _VGG:
        return _torchvision(name, name)
    if name.startswith("torchvision."):
        return _torchvision(name, name.partition(".")[2])
    return None


def pretrained_preprocess(name: str) -> dict | None:
    """The preprocessing ``name``'s published weights were trained with (image_size, crop_ratio, mean,
    std), known without downloading; ``None`` when there are no published weights."""
    if name.startswith("timm."):
        try:
            import timm
        except ImportError:
            return None
        cfg = timm.models.get_pretrained_cfg(name.partition(".")[2])
        if cfg is None:
            return None
        return {"image_size": int(cfg.input_size[-1]), "crop_ratio": float(cfg.crop_pct), "mean": list(cfg.mean),
                "std": list(cfg.std)}
    try:
        source = weight_source(name)
    except WeightsError:
        return None
    return source.preprocess if source is not None else None


def published_names() -> list[str]:
    """The plainnet models with published ImageNet weights (``plainnet models --pretrained``)."""
    return [f"repvgg_{v}" for v in sorted(_TIMM_REPVGG + _OFFICIAL_ONLY)] + list(_VGG)


# ----------------------------------------------------------------------------- fetching


def fetch(source: WeightSource) -> Path:
    """The local file of ``source``: from the cache, else downloaded (and checked) into it. Offline
    with an empty cache: a one-line :class:`WeightsError` naming the file, its source and its place."""
    if source.kind == "hf":
        return _fetch_hf(source)
    path = source.cache_path()
    if path.is_file():
        return path
    if source.kind == "manual":
        raise WeightsError(f"{source.model}: its ImageNet weights are published only in the official RepVGG "
                           f"release ({source.where}); download {source.filename} and place it at {path}, "
                           "or pass weights=PATH")
    return download_url(source.where, path, what=source.model)


def download_url(url: str, path: Path, what: str = "weights") -> Path:
    """``url`` into ``path`` through torch hub (progress bar; a temporary file moved into place only
    when complete), checking the sha256 prefix in torchvision's file names (``vgg16-397923af.pth``)."""
    match = re.search(r"-([a-f0-9]{6,})\.", path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None,
                                       progress=_progress())
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise WeightsError(f"{what}: the file downloaded from {url} does not match its published checksum "
                               f"(sha256 {match.group(1)}...): not kept; try again") from None
        raise
    except OSError as e:  # no network, refused, not found
        reason = getattr(e, "reason", None) or e.strerror or e
        raise WeightsError(f"{what}: cannot download {url} ({reason}); on a machine without network place "
                           f"{path.name} from that address at {path}") from None
    return path


def _progress() -> bool:
    return os.environ.get("PLAINNET_PROGRESS", "1") != "0"


def _fetch_hf(source: WeightSource) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source.where, source.filename, local_files_only=True))  # checked when fetched
    except LocalEntryNotFoundError:
        pass
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where_to = (f"on a machine with network run `hf download {source.where} {source.filename}` and copy its "
                f"cache ({constants.HF_HUB_CACHE}) here, or pass weights=PATH")
    if offline:
        raise WeightsError(f"{source.model}: offline (HF_HUB_OFFLINE) and {source.filename} of {source.page} is "
                           f"not in the Hugging Face cache; {where_to}")
    try:
        path = Path(hf_hub_download(source.where, source.filename))
    except Exception as e:  # noqa: BLE001 - no network, hub down, gated: one line either way
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{source.model}: cannot download {source.filename} from {source.page} ({first}); "
                           f"{where_to}") from None
    _check_hf_blob(path, source)
    return path


def _check_hf_blob(path: Path, source: WeightSource) -> None:
    """A file the hub stores in LFS is cached under its sha256: a freshly downloaded one must hash to it."""
    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        blob.unlink()
        path.unlink(missing_ok=True)
        raise WeightsError(f"{source.model}: {source.filename} from {source.page} does not match its published "
                           f"sha256 {blob.name[:12]}...: removed from the cache; try again")


def pretrained_state_dict(name: str) -> tuple[dict[str, torch.Tensor], WeightSource]:
    """The published ImageNet state dict of ``name`` (any dialect plainnet reads) and its source."""
    from .weights import read_state_dict

    source = weight_source(name)
    if source is None:
        raise WeightsError(f"no published ImageNet weights for {name} (plainnet models --pretrained lists "
                           "those that have); pass weights=PATH with a local checkpoint")
    return read_state_dict(fetch(source)), source
