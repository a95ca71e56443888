"""Predict classes for image files and folders with any saved model form.

Output follows the documented schema ``plainnet.predictions/v1`` (``docs/predict.schema.json``): one
record per input file, either ``{"path", "ok": true, "top_k": [{"class", "index", "probability"}...]}``
or ``{"path", "ok": false, "error"}``. A bad file fails alone; the others are still predicted. Every
input, and every entry with an image suffix found in an input folder (a broken link, a folder named
``x.jpg``), gets a record. Paths that are not valid UTF-8 are written with ``\\xNN`` escapes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import torch

from ..data.folder import display_path
from ..data.images import BadImageError, list_images
from .inference import InferenceModel, read_image

__all__ = ["SCHEMA", "expand_inputs", "predict_files", "top_k_entries"]

SCHEMA = "plainnet.predictions/v1"


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively (sorted), duplicates removed.

    Inside folders, every entry with an image suffix is kept, whatever it turns out to be: a broken
    link or a folder named ``x.jpg`` then gets an error record instead of vanishing from the output.
    Hidden entries (names starting with ".") and files without an image suffix are left out.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += list_images(p)
        else:
            out.append(p)  # a missing or non-image file gets its own error record
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def predict_files(model: InferenceModel, paths: list[Path], *, top_k: int = 3, batch_size: int = 32,
                  explain_dir: Path | None = None) -> dict:
    """Top-``k`` classes with probabilities for every file; unreadable files get an error record."""
    k = max(1, min(top_k, len(model.classes)))
    records: list[dict | None] = [None] * len(paths)
    for start in range(0, len(paths), batch_size):
        images, good = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                images.append(read_image(paths[i], model.preprocess))
                good.append(i)
            except BadImageError as e:
                records[i] = {"path": display_path(paths[i]), "ok": False, "error": e.reason}
        if not images:
            continue
        batch = torch.stack(images)
        probs = model(model.prepare(batch)).softmax(1)
        overlays = (_explain(model, batch, explain_dir, [paths[i] for i in good]) if explain_dir
                    else [None] * len(good))
        for i, row, overlay in zip(good, probs, overlays):
            record = {"path": display_path(paths[i]), "ok": True, "top_k": top_k_entries(model.classes, row, k)}
            if overlay is not None:
                record["explanation"] = display_path(overlay)
            records[i] = record
    return {"schema": SCHEMA, "model": str(model.source), "classes": list(model.classes), "top_k": k,
            "predictions": records}


def top_k_entries(classes: list[str], probs: torch.Tensor, k: int) -> list[dict]:
    """One image's ``k`` most probable classes, as the schema's ``top_k`` entries."""
    values, indices = probs.topk(k)
    return [{"class": classes[c], "index": c, "probability": round(v, 6)}
            for v, c in zip(values.tolist(), indices.tolist())]


def _explain(model: InferenceModel, batch: torch.Tensor, out_dir: Path, paths: list[Path]) -> list[Path]:
    from PIL import Image

    from ..errors import writing_into
    from .evaluate import explain_images

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, overlay in zip(paths, explain_images(model, batch)):
        target = out_dir / f"{display_path(path.stem)}.gradcam.png"
        with writing_into(target):
            Image.fromarray(overlay).resize((overlay.shape[1] * 2, overlay.shape[0] * 2)).save(target)
        written.append(target)
    return written


def predictions_csv(result: dict) -> str:
    """:func:`predict_files`'s answer as CSV: path, ok, error, then class and probability per rank."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "ok", "error", *[f"{kind}{i + 1}" for i in range(result["top_k"])
                                          for kind in ("class", "probability")]])
    for r in result["predictions"]:
        w.writerow([r["path"], int(r["ok"]), r.get("error", ""),
                    *[v for p in r.get("top_k", []) for v in (p["class"], p["probability"])]])
    return buf.getvalue()
