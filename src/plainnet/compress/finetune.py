"""Fine-tuning a changed model (pruned, a new head, a distilled student) with the recipe of the run its
weights came from -- one helper for ``plainnet prune`` and ``plainnet compress`` -- and the prune-then-
fine-tune procedure behind ``plainnet prune``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..run_dir import RunDir

__all__ = ["FINETUNE_LR_SCALE", "PruneResult", "finetune", "prune_and_finetune"]

#: Fine-tuning from trained weights uses this fraction of the original run's learning rate.
FINETUNE_LR_SCALE = 0.1


def finetune(model: nn.Module, base: RunDir | None, *, epochs: int, runs_dir: str | Path, name: str,
             data: str | None = None, teacher: str | Path | None = None, from_scratch: bool = False,
             progress: bool | None = None):
    """Train ``model`` for ``epochs`` on ``data`` (default: the data of the run ``base``), with that run's
    recipe; from trained weights (``from_scratch=False``) gently: a tenth of its learning rate on a
    cosine schedule without warm-up. ``teacher``: distil from this checkpoint (its soft targets replace
    label smoothing). Returns the :class:`~plainnet.engine.train.TrainResult` of the new run."""
    from ..engine.train import train

    overrides = {"train.epochs": str(epochs), "train.runs_dir": str(runs_dir), "train.name": name}
    if progress is not None:
        overrides["train.progress"] = str(progress).lower()
    if data:
        overrides["data.path"] = data
    config = base.config() if base is not None else None
    if not from_scratch:
        overrides.update({"schedule.name": "cosine", "schedule.warmup_epochs": "0"})
        if config is not None:
            overrides["optim.lr"] = str(config.optim.lr * FINETUNE_LR_SCALE)
    if teacher is not None:
        overrides.update({"distill.teacher": str(teacher), "train.label_smoothing": "0.0"})
    return train(config, overrides=overrides, model_instance=model)


@dataclass
class PruneResult:
    checkpoint: Path
    #: Summaries (fused) before and after, at the model's input size ``image_size``.
    before: object
    after: object
    image_size: int
    #: Held-out accuracy after fine-tuning (``None`` without fine-tuning).
    accuracy: float | None = None
    #: The pruned model's training and fused forms agree (structured pruning).
    equivalence: object | None = None
    #: Share of zero weights (unstructured pruning).
    sparsity: float | None = None


def prune_and_finetune(model_path: str | Path, ratio: float, *, data: str | None = None, finetune_epochs: int = 5,
                       steps: int = 1, unstructured: bool = False, name: str = "",
                       runs_dir: str | Path = "runs") -> PruneResult:
    """Prune the training-form model at ``model_path`` (a run directory or checkpoint) and fine-tune it.

    Structured: ``ratio`` of the channels removed (in ``steps`` steps, fine-tuning after each) and the
    pruned model checked to still re-parameterize exactly; the result is a new run directory
    ``runs_dir/name``. Unstructured: ``ratio`` of the weights zeroed, saved as ``runs_dir/name/best.pt``.
    """
    import torch

    from ..errors import ConfigError
    from ..evaluation.inference import load_inference_model, sample_images
    from ..models import load_model, save_checkpoint, summarize
    from ..models.checkpoint import load_checkpoint
    from ..models.reparam import reparameterize, verify_equivalence
    from .prune import structured_prune, unstructured_prune, weight_sparsity

    if not 0 < ratio < 1:
        raise ConfigError(f"--ratio must be between 0 and 1, got {ratio}")
    loaded = load_inference_model(model_path)
    if not loaded.backend.training_form:
        raise ConfigError("prune a training-form checkpoint (best.pt of a run), not a fused or exported model")
    base = load_model(loaded.source)
    size = loaded.preprocess.image_size
    meta = {k: v for k, v in load_checkpoint(loaded.source).items() if k in ("classes", "preprocess", "config")}
    before = summarize(reparameterize(base), size)
    name = name or f"{base.arch['name']}-{'l1' if unstructured else 'pruned'}{int(ratio * 100)}"
    out = RunDir(Path(runs_dir) / name)
    if unstructured:
        unstructured_prune(base, ratio)
        path = save_checkpoint(base, out.best, **meta)
        return PruneResult(path, before, summarize(reparameterize(base), size), size, sparsity=weight_sparsity(base))
    example = sample_images(loaded, n=2, split="train")
    if len(example) == 0:
        example = torch.randn(2, 3, size, size)
    if loaded.run is None and not data:
        raise ConfigError("this checkpoint is not inside a run directory: pass --data DIR to fine-tune on")

    def tune(model, epochs: int, tag: str):
        return finetune(model, loaded.run, epochs=epochs, runs_dir=runs_dir, name=tag, data=data)

    per_step = max(1, math.ceil(finetune_epochs / steps)) if finetune_epochs else 0
    structured_prune(base, ratio, example, steps=steps,
                     between_steps=(lambda i, m: tune(m, per_step, f"{name}-step{i + 1}")) if per_step else None)
    if finetune_epochs:
        result = tune(base, per_step, name)
        pruned, accuracy = load_model(result.best_checkpoint), result.final.get("val", {}).get("acc")
    else:
        pruned, accuracy = base.eval(), None
        save_checkpoint(pruned, out.best, **meta)
    equivalence = verify_equivalence(pruned, reparameterize(pruned), example)
    return PruneResult(out.best, before, summarize(reparameterize(pruned), size), size, accuracy, equivalence)
