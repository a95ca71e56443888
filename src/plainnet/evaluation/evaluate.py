"""``plainnet eval``: score a saved model on labelled images and write what a person needs to look at.

Writes into the output directory: ``metrics.json`` (overall, per class, test-time-augmentation gains),
``per_class.csv``, ``confusion.csv`` and ``confusion.png``, ``predictions.csv`` (one row per image),
``misclassified.png`` (a grid with true / predicted labels and confidence) and ``gradcam.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.augment import resize_center_crop
from ..data.cifar import ArrayDataset
from ..data.folder import Sample, Splits, load_splits, scan_class_folders
from ..config import DataConfig, RunConfig, config_from_dict
from ..errors import ConfigError, DataError, writing_into
from ..files import atomic_write, atomic_write_text
from ..run_dir import EvalDir
from .inference import InferenceModel, load_inference_model
from .metrics import classification_metrics, parse_scales, predict_probs

__all__ = ["EvalData", "EvalResult", "load_eval_data", "evaluate", "explain_images"]

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """Labelled images at the model's stored size: uint8 ``(N, 3, side, side)``, labels in the model's
    class order, and a name per image (file path, or ``#index`` for in-memory datasets)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    description: str
    bad_files: list[tuple[str, str]]


@dataclass
class EvalResult:
    metrics: dict
    out_dir: Path
    probs: torch.Tensor
    data: EvalData


def _run_config(model: InferenceModel) -> RunConfig | None:
    """The training config: from the run directory around the model, else saved inside the checkpoint."""
    if model.run is not None:
        try:
            return model.run.config()
        except ConfigError as e:  # (e.g. written by another plainnet version): the checkpoint's copy
            log.warning("ignoring %s: %s", model.run.config_file, e)
    if model.config:
        try:
            return config_from_dict(model.config)
        except ConfigError as e:
            log.warning("ignoring the training config saved in %s: %s", model.source, e)
    return None


def _map_labels(found: tuple[str, ...], model_classes: list[str]) -> dict[int, int]:
    unknown = [c for c in found if c not in model_classes]
    if unknown:
        raise DataError(f"class folder(s) the model does not know: {', '.join(unknown)} "
                        f"(model classes: {', '.join(model_classes)})")
    return {i: model_classes.index(c) for i, c in enumerate(found)}


def _decode(samples: tuple[Sample, ...], side: int, cache_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    from ..data.cache import decode_samples

    decoded = decode_samples(samples, side, cache_dir=cache_dir or None)
    images, labels = decoded.tensors()
    names = [str(s.path) for s, ok in zip(samples, decoded.ok) if ok]
    return images, labels, names, decoded.bad


def load_eval_data(model: InferenceModel, data: str | None = None, split: str | None = None,
                   cache_dir: str | None = None) -> EvalData:
    """The labelled images to score.

    ``split`` ``None`` (automatic): the held-out split when ``data`` is the model's own training data
    (the default without ``data``; the run's ``split.json``, or the same seeded split re-created from the
    config saved in the checkpoint), the ``val`` folder of a ``train/``+``val/`` layout, and otherwise
    every image under ``data``. ``val``/``test`` ask for that split explicitly, ``all`` for every image.
    Class folders are matched to the model's classes by name.
    """
    side = model.preprocess.resize_to
    config = _run_config(model)
    trained_on = config.data.path if config else None
    if data is None:
        if not trained_on:
            raise DataError("no --data given and the model does not record its training data: pass --data DIR")
        data = trained_on
    if data == "digits" or (Path(data).is_dir() and _is_cifar(data)):
        return _array_eval_data(model, data, config, split or "val")
    from ..data.folder import detect_layout

    root = Path(data).resolve()
    own_data = bool(trained_on) and trained_on != "digits" and Path(trained_on).resolve() == root
    layout = detect_layout(root)
    if split == "all" or (split is None and not own_data and layout == "class-folders"):
        classes, samples = scan_class_folders(root, min_classes=1)
        description = f"{root} (all images)"
    elif layout == "explicit":
        splits = load_splits(root)
        samples = splits.test if split == "test" and splits.test else splits.val
        classes = splits.classes
        description = f"{root} ({'test' if samples is splits.test else 'val'} folder)"
    else:
        splits = _recorded_split(model, root, config)
        which = split or "val"
        samples, classes = getattr(splits, which), splits.classes
        if not samples:
            raise DataError(f"the split of {root} has no {which} images")
        description = f"{root} ({which} split of the run)"
    images, labels, names, bad = _decode(samples, side, cache_dir)
    mapping = _map_labels(classes, model.classes)
    labels = torch.tensor([mapping[int(y)] for y in labels], dtype=torch.int64)
    return EvalData(images, labels, names, description, bad)


def _recorded_split(model: InferenceModel, root: Path, config: RunConfig | None) -> Splits:
    """The run's own split.json when it covers ``root``; else the same deterministic split re-created
    from the saved (or default) fractions and seed."""
    record = model.run.split_record() if model.run else None
    if record is not None and Path(record["root"]).resolve() == root:
        return Splits.from_json(record)
    d = config.data if config else DataConfig()
    return load_splits(root, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.seed)


def _is_cifar(path: str) -> bool:
    from ..data.folder import detect_layout

    return detect_layout(path) == "cifar-batches"


def _array_eval_data(model: InferenceModel, data: str, config: RunConfig | None, split: str) -> EvalData:
    from ..data.sources import load_source

    d = config.data if config else DataConfig()
    source: ArrayDataset = load_source(data, val_fraction=d.val_fraction, seed=d.seed)
    if split == "all":
        pixels = np.concatenate([source.train_images, source.test_images])
        labels = np.concatenate([source.train_labels, source.test_labels])
    else:
        pixels, labels = source.test_images, source.test_labels
    mapping = _map_labels(source.classes, model.classes)
    images = resize_center_crop(torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2),
                                model.preprocess.resize_to)
    return EvalData(images, torch.tensor([mapping[int(y)] for y in labels]), [f"#{i}" for i in range(len(labels))],
                    f"{data} ({'all' if split == 'all' else 'held-out'} images)", [])


def _batches(model: InferenceModel, images: torch.Tensor, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield model.prepare(images[i : i + batch_size])


def _hwc(model: InferenceModel, image: torch.Tensor) -> np.ndarray:
    from ..data.augment import center_crop

    return center_crop(image, model.preprocess.image_size).permute(1, 2, 0).numpy()


def explain_images(model: InferenceModel, images: torch.Tensor, target: torch.Tensor | None = None) -> list[np.ndarray]:
    """Grad-CAM overlays (uint8 HxWx3) for stored-size uint8 images; needs a PyTorch model."""
    from .gradcam import grad_cam
    from .plots import cam_overlay

    if not model.backend.can_explain:
        raise DataError("Grad-CAM needs the PyTorch model (a checkpoint), not an exported file")
    cams, _ = grad_cam(model.backend.built, model.prepare(images).to(model.backend.device), target)
    return [cam_overlay(_hwc(model, img), cam.numpy()) for img, cam in zip(images, cams)]


def evaluate(model_path: str | Path, data: str | None = None, *, split: str | None = None, tta: str = "none",
             scales: str | tuple[float, ...] | None = None, out_dir: str | Path | None = None,
             batch_size: int = 64, max_examples: int = 24, cache_dir: str | None = None) -> EvalResult:
    """Score a saved model on labelled images and write metrics, tables and figures.

    Args:
        model_path: a run directory, a checkpoint (training or fused form) or an ONNX export.
        data: the labelled images (see :func:`load_eval_data`); default: the run's held-out split.
        split: ``val``, ``test``, ``all``, or ``None`` (automatic, see :func:`load_eval_data`).
        tta: ``none``, ``hflip`` or ``flips``; with ``scales`` (e.g. ``"0.875,1,1.143"``), the gain
            of each over the single centre crop is reported.
        out_dir: where to write (default ``RUN_DIR/eval-<split>`` or ``./eval-<model name>``).
    """
    if split not in (None, "val", "test", "all"):
        raise ConfigError(f"split must be val, test or all, not {split!r}")
    if tta not in ("none", "hflip", "flips"):
        raise ConfigError(f"tta must be none, hflip or flips, not {tta!r}")
    try:
        scale_list = parse_scales(scales)
    except ValueError as e:
        raise ConfigError(f"scales: {e}") from None
    model = load_inference_model(model_path)
    ev = load_eval_data(model, data, split, cache_dir)
    if len(ev.labels) == 0:
        raise DataError("no readable labelled images to evaluate")
    if ev.bad_files:
        log.warning("skipped %d unreadable image(s): %s", len(ev.bad_files),
                    "; ".join(f"{p} ({r})" for p, r in ev.bad_files[:10]))
    files = _eval_dir(model, data, split, out_dir)
    probs = predict_probs(model, _batches(model, ev.images, batch_size))
    metrics = classification_metrics(probs, ev.labels, model.classes)
    metrics["test_time_augmentation"] = _tta_variants(model, ev, tta, scale_list, batch_size, metrics["top1"])
    metrics["model"] = {"source": str(model.source), "form": model.form}
    metrics["data"] = ev.description
    metrics["bad_files"] = ev.bad_files
    with writing_into(files.path):  # a disk that fills up names the output folder
        _write_eval(files, model, ev, metrics, probs, max_examples)
    log.info("evaluated %d images from %s: top-1 %.4f -> %s", len(ev.labels), ev.description, metrics["top1"],
             files.path)
    return EvalResult(metrics=metrics, out_dir=files.path, probs=probs, data=ev)


def _eval_dir(model: InferenceModel, data, split, out_dir) -> EvalDir:
    """``out_dir``, else the run's ``eval-<split>`` (its own held-out data), else ``eval-<model name>``."""
    if out_dir:
        files = EvalDir(out_dir)
    elif model.run is not None and data is None:
        files = model.run.eval_dir(split or "val")
    else:
        files = EvalDir((model.run_dir or Path.cwd()) / f"eval-{model.source.stem}")
    files.path.mkdir(parents=True, exist_ok=True)
    return files


def _tta_variants(model: InferenceModel, ev, tta: str, scale_list, batch_size: int, top1: float) -> dict:
    """Top-1 with each test-time augmentation asked for, and its gain over the single centre crop."""
    candidates = []
    if tta != "none":
        candidates.append((tta, tta, (1.0,)))
    if scale_list != (1.0,):
        if model.backend.fixed_size:
            log.warning("skipping multi-scale evaluation: a %s export has a fixed input size", model.form)
        else:
            candidates.append(("multi-scale", "none", scale_list))
            if tta != "none":
                candidates.append((f"{tta}+multi-scale", tta, scale_list))
    variants = {}
    for name, mode, sc in candidates:
        p = predict_probs(model, _batches(model, ev.images, batch_size), tta=mode, scales=sc)
        variant_top1 = classification_metrics(p, ev.labels, model.classes)["top1"]
        variants[name] = {"tta": mode, "scales": list(sc), "top1": variant_top1, "gain": variant_top1 - top1}
    return variants


def _write_eval(files: EvalDir, model: InferenceModel, ev, metrics: dict, probs, max_examples: int) -> None:
    """The tables (per class, confusion, predictions), the figures and metrics.json."""
    from .plots import plot_confusion, plot_image_grid

    with atomic_write(files.per_class, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "support"])
        w.writeheader()
        w.writerows(metrics["per_class"])
    with atomic_write(files.confusion_table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *model.classes])
        for cls, row in zip(model.classes, metrics["confusion"]):
            w.writerow([cls, *row])
    conf, pred = probs.max(1)
    with atomic_write(files.predictions, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "true", "predicted", "confidence", "correct"])
        for name, y, p, c in zip(ev.names, ev.labels.tolist(), pred.tolist(), conf.tolist()):
            w.writerow([name, model.classes[y], model.classes[p], f"{c:.4f}", int(y == p)])
    plot_confusion(metrics["confusion"], model.classes, files.confusion)

    wrong = torch.nonzero(pred != ev.labels).flatten()
    metrics["misclassified"] = len(wrong)
    files.misclassified.unlink(missing_ok=True)
    shown = wrong[conf[wrong].argsort(descending=True)][:max_examples]  # the most confident mistakes first
    if len(shown):
        plot_image_grid([_hwc(model, ev.images[i]) for i in shown],
                        [f"true: {model.classes[ev.labels[i]]}\npred: {model.classes[pred[i]]} ({conf[i]:.0%})"
                         for i in shown], files.misclassified,
                        title=f"misclassified: {len(wrong)} of {len(pred)} (most confident first)")
    if model.backend.can_explain:
        picks = _cam_picks(ev.labels, pred, shown, 12)
        overlays = explain_images(model, ev.images[picks])
        plot_image_grid(overlays, [f"{model.classes[ev.labels[i]]}\n→ {model.classes[pred[i]]} ({conf[i]:.0%})"
                                   for i in picks], files.gradcam, title="Grad-CAM (predicted class)",
                        colors=["black" if pred[i] == ev.labels[i] else "crimson" for i in picks])
    atomic_write_text(files.metrics, json.dumps(metrics, indent=1))


def _cam_picks(labels: torch.Tensor, pred: torch.Tensor, wrong: torch.Tensor, n: int) -> torch.Tensor:
    """Up to ``n`` images: one correct example per class first, then mistakes."""
    picks: list[int] = []
    for c in labels.unique().tolist():
        hits = torch.nonzero((labels == c) & (pred == c)).flatten()
        if len(hits):
            picks.append(int(hits[0]))
    picks += [int(i) for i in wrong if int(i) not in picks]
    return torch.tensor(picks[:n], dtype=torch.int64)
