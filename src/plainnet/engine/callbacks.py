"""Lightning plug-ins that make a run directory self-describing and safe to kill.

- :class:`AtomicCheckpointIO` writes Lightning checkpoints beside their destination and renames them
  into place, so ``kill -9`` during a save never corrupts the last good checkpoint.
- :class:`DivergenceGuard` stops a run whose training loss is no longer finite, with an error that says
  what to change, before a NaN epoch overwrites the last good checkpoint.
- :class:`RunRecorder` keeps the per-epoch history (restored on resume, so no epoch is counted twice),
  rewrites ``metrics.csv`` each epoch and ``curves.png`` every ``plot_every_s`` seconds and at the end,
  and saves ``best.pt`` (when the monitored metric improves) and ``last.pt`` (when training ends) as
  plainnet checkpoints (architecture, weights, class names, preprocessing) that evaluate, predict and
  export read.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..errors import PlainnetError
from ..models.weights import atomic_torch_save, save_checkpoint

__all__ = ["AtomicCheckpointIO", "DivergenceGuard", "RunRecorder"]

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


class DivergenceGuard(L.Callback):
    """Raise :class:`PlainnetError` at the first step whose loss is NaN or infinite."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            raise PlainnetError(
                f"training diverged: the loss became {loss.item()} at epoch {trainer.current_epoch}, step "
                f"{batch_idx}; lower the learning rate (--optim.lr, now {self.lr:g}) or clip gradients "
                "(--train.grad_clip 1.0). Checkpoints of the finished epochs are kept.")


class RunRecorder(L.Callback):
    """Per-epoch bookkeeping on rank 0.

    Args:
        run_dir: the run directory.
        meta: stored in every plainnet checkpoint (class names, preprocessing, config...).
        monitor: the metric that decides ``best.pt`` (e.g. ``val/acc``); ``mode`` max or min.
        plot_every_s: redraw ``curves.png`` during training at most this often (drawing takes ~0.4 s,
            as long as a whole epoch of a small dataset); it is always drawn when training ends.
    """

    def __init__(self, run_dir: Path, meta: dict, monitor: str = "val/acc", mode: str = "max",
                 plot_every_s: float = 30.0) -> None:
        self.run_dir, self.meta, self.monitor, self.mode = Path(run_dir), meta, monitor, mode
        self.plot_every_s = plot_every_s
        self._last_plot = time.perf_counter()
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - pl_module.epoch_start  # includes this epoch's validation
        training = pl_module.train_seconds or elapsed
        # Already global (images x processes) or the same on every process: logged once, from rank 0.
        pl_module.log("train/img_s", pl_module.epoch_images * trainer.world_size / max(training, 1e-6),
                      rank_zero_only=True)
        pl_module.log("train/train_time", training, rank_zero_only=True)
        pl_module.log("train/epoch_time", elapsed, rank_zero_only=True)
        pl_module.log("lr", trainer.optimizers[0].param_groups[-1]["lr"], rank_zero_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor) and v.numel() == 1 and k != "img_s"}
        row = {"epoch": trainer.current_epoch, **metrics}
        # Drop anything recorded for this epoch by an interrupted attempt (defensive: history is restored
        # from the checkpoint of the previous epoch, so normally there is none).
        self.history = [h for h in self.history if h["epoch"] < trainer.current_epoch] + [row]
        value = metrics.get(self.monitor)
        improved = value is not None and not math.isnan(value) and self._improved(value)
        if improved:
            self.best, self.best_epoch = value, trainer.current_epoch
        if trainer.is_global_zero:
            if improved:
                save_checkpoint(pl_module.eval_model, self.run_dir / "best.pt", **self._meta(trainer.current_epoch))
            self.write_metrics(plot=time.perf_counter() - self._last_plot >= self.plot_every_s)

    def _meta(self, epoch: int) -> dict:
        row = next(h for h in self.history if h["epoch"] == epoch)
        return {**self.meta, "epoch": epoch, "metrics": {k: v for k, v in row.items() if k != "epoch"}}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # last.pt once, when training ends: rewriting it every epoch cost as much as a small epoch
        # (checkpoints/last.ckpt is what --resume continues from).
        if trainer.is_global_zero and self.history:
            save_checkpoint(pl_module.eval_model, self.run_dir / "last.pt", **self._meta(self.history[-1]["epoch"]))
            self.write_metrics(plot=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # The weights may be what failed (a NaN loss): keep the metrics and curves, write no checkpoint.
        if trainer.is_global_zero and self.history:
            self.write_metrics(plot=True)

    def write_metrics(self, plot: bool = True) -> None:
        from ..evaluation.plots import plot_curves

        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        tmp = self.run_dir / ".metrics.csv.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        tmp.replace(self.run_dir / "metrics.csv")
        if not plot:
            return
        self._last_plot = time.perf_counter()
        try:
            plot_curves(self.history, self.run_dir / "curves.png")
        except Exception as e:  # a plotting problem must never stop training
            log.warning("could not draw curves.png: %s", e)
