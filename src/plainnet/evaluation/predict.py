"""Predict classes for image files and folders with any saved model form.

Output follows the documented schema ``plainnet.predictions/v1`` (``docs/predict.schema.json``): one
record per input file, either ``{"path", "ok": true, "top_k": [{"class", "index", "probability"}...]}``
or ``{"path", "ok": false, "error"}``. A bad file fails alone; the others are still predicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from ..data.images import BadImageError, is_image_file
from .inference import InferenceModel, read_image

__all__ = ["SCHEMA", "expand_inputs", "predict_files"]

SCHEMA = "plainnet.predictions/v1"


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted), duplicates removed."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)  # a missing or non-image file gets its own error record
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def predict_files(model: InferenceModel, paths: list[Path], *, top_k: int = 3, batch_size: int = 32,
                  explain_dir: Path | None = None) -> dict:
    """Top-``k`` classes with probabilities for every file; unreadable files get an error record."""
    k = max(1, min(top_k, len(model.classes)))
    records: list[dict] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images, good = [], []
        for path in chunk:
            try:
                images.append(read_image(path, model.preprocess))
                good.append(path)
            except BadImageError as e:
                records.append({"path": str(path), "ok": False, "error": e.reason})
        if not images:
            continue
        batch = torch.stack(images)
        probs = model(model.prepare(batch)).softmax(1)
        values, indices = probs.topk(k, dim=1)
        overlays = _explain(model, batch, explain_dir, good) if explain_dir else [None] * len(good)
        for path, vals, idxs, overlay in zip(good, values.tolist(), indices.tolist(), overlays):
            record = {"path": str(path), "ok": True, "top_k": [
                {"class": model.classes[i], "index": i, "probability": round(v, 6)} for v, i in zip(vals, idxs)]}
            if overlay is not None:
                record["explanation"] = str(overlay)
            records.append(record)
    order = {str(p): i for i, p in enumerate(paths)}
    records.sort(key=lambda r: order[r["path"]])
    return {"schema": SCHEMA, "model": str(model.source), "classes": list(model.classes), "top_k": k,
            "predictions": records}


def _explain(model: InferenceModel, batch: torch.Tensor, out_dir: Path, paths: list[Path]) -> list[Path]:
    from PIL import Image

    from .evaluate import explain_images

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, overlay in zip(paths, explain_images(model, batch)):
        target = out_dir / f"{path.stem}.gradcam.png"
        Image.fromarray(overlay).resize((overlay.shape[1] * 2, overlay.shape[0] * 2)).save(target)
        written.append(target)
    return written
