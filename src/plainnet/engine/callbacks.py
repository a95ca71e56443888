"""Lightning plug-ins that make a run directory self-describing and safe to kill.

- :class:`AtomicCheckpointIO` writes Lightning checkpoints beside their destination and renames them
  into place, so ``kill -9`` during a save never corrupts the last good checkpoint.
- :class:`DivergenceGuard` stops a run whose training loss is no longer finite, with an error that says
  what to change, before a NaN epoch overwrites the last good checkpoint.
- :class:`TrainingClock` sets each epoch's image size (progressive resizing), validates less often when a
  validation pass costs much of an epoch, and, under a time budget, re-fits the number of epochs and the
  schedule to the time left after every epoch.
- :class:`TargetStop` ends a run once validation reaches ``train.target_acc``.
- :class:`StartupTimer` logs, at the first training step, all the work before it by phase, in one line.
- :class:`RunRecorder` keeps the per-epoch history (restored on resume, so no epoch is counted twice),
  rewrites ``metrics.csv`` each epoch and ``curves.png`` every ``plot_every_s`` seconds and at the end,
  and saves ``best.pt`` (when the monitored metric improves) and ``last.pt`` (when training ends) as
  plainnet checkpoints (architecture, weights, class names, preprocessing) that evaluate, predict and
  export read.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..errors import PlainnetError
from ..files import atomic_torch_save
from ..models.checkpoint import save_checkpoint
from ..run_dir import RunDir
from .schedule import FULL_SIZE_AT, step_cost, train_size

__all__ = ["AtomicCheckpointIO", "DivergenceGuard", "RunRecorder", "StartupTimer", "TargetStop", "TrainingClock"]

log = logging.getLogger(__name__)

#: Validate every epoch while one validation pass costs at most this share of an epoch's training.
VAL_SHARE = 0.1
#: ... and otherwise at least this often (early stopping and best.pt need validated epochs).
MAX_VAL_EVERY = 5


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


class TargetStop(L.Callback):
    """Stop once the validation ``monitor`` (an accuracy) reaches ``target`` (``train.target_acc``)."""

    def __init__(self, target: float, monitor: str = "val/acc", notes: list[str] | None = None) -> None:
        self.target, self.monitor, self.notes = target, monitor, notes if notes is not None else []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or trainer.should_stop or float(value) < self.target:
            return
        trainer.should_stop = True
        note = (f"target reached: {self.monitor} {float(value):.4f} >= {self.target:g} after epoch "
                f"{trainer.current_epoch + 1}: stopped")
        self.notes.append(note)
        log.info("%s", note)


class StartupTimer(L.Callback):
    """All the work before the first training step, by phase, logged as one line at that step.

    ``mark(name)`` closes the phase that ran since the last mark (the first one: since ``started``, the
    command's start); the first training batch closes the last one ("trainer start").
    """

    def __init__(self, started: float, clock=time.perf_counter) -> None:
        self.clock, self._last, self.phases = clock, started, []
        self.seconds: float | None = None

    def mark(self, name: str) -> None:
        now = self.clock()
        self.phases.append((name, now - self._last))
        self._last = now

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.seconds is not None:
            return
        self.mark("trainer start")
        self.seconds = sum(s for _, s in self.phases)
        log.info("startup: first training step after %.1f s (%s)", self.seconds,
                 ", ".join(f"{name} {s:.1f} s" for name, s in self.phases))


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
        self.run, self.meta, self.monitor, self.mode = RunDir(run_dir), meta, monitor, mode
        self.plot_every_s = plot_every_s
        self._last_plot = time.perf_counter()
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._validated: int | None = None  # the last epoch that ran a validation pass

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = trainer.current_epoch

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
                   if isinstance(v, torch.Tensor) and v.numel() == 1 and k != "img_s"
                   and (self._validated == trainer.current_epoch or not k.startswith("val/"))}
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
                save_checkpoint(pl_module.eval_model, self.run.best, **self._meta(trainer.current_epoch))
            self.write_metrics(plot=time.perf_counter() - self._last_plot >= self.plot_every_s)

    def _meta(self, epoch: int) -> dict:
        row = next(h for h in self.history if h["epoch"] == epoch)
        return {**self.meta, "epoch": epoch, "metrics": {k: v for k, v in row.items() if k != "epoch"}}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # last.pt once, when training ends: rewriting it every epoch cost as much as a small epoch
        # (checkpoints/last.ckpt is what --resume continues from).
        if trainer.is_global_zero and self.history:
            save_checkpoint(pl_module.eval_model, self.run.last, **self._meta(self.history[-1]["epoch"]))
            self.write_metrics(plot=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # The weights may be what failed (a NaN loss): keep the metrics and curves, write no checkpoint.
        if trainer.is_global_zero and self.history:
            self.write_metrics(plot=True)

    def write_metrics(self, plot: bool = True) -> None:
        from ..evaluation.plots import plot_curves

        self.run.write_history(self.history)
        if not plot:
            return
        self._last_plot = time.perf_counter()
        try:
            plot_curves(self.history, self.run.curves)
        except Exception as e:  # a plotting problem must never stop training
            log.warning("could not draw curves.png: %s", e)


class TrainingClock(L.Callback):
    """Progressive resizing, validation as often as it is cheap, and a run that ends by its deadline.

    At each epoch start the data module's training image size follows the schedule's progress
    (:func:`~plainnet.engine.schedule.train_size`). Validation runs every ``val_every`` epochs and always
    after the last one; ``val_every=0`` decides after the first epoch: every epoch while a validation
    pass costs at most :data:`VAL_SHARE` of an epoch's training, else as rarely as keeps it there (at most
    every :data:`MAX_VAL_EVERY` epochs; under a deadline, also an epoch after which no other is likely to
    fit). With a ``deadline``, after every epoch the epochs that still fit
    are counted from the measured seconds per epoch (scaled by :func:`~plainnet.engine.schedule.step_cost`
    as the image grows), leaving what must follow training (``reserve(validation_seconds)``: the final
    scoring and the report). When the plan overruns by more than ``tolerance`` seconds, or more epochs
    fit with ``tolerance`` to spare while the images still grow, ``max_epochs`` and the learning-rate
    schedule are re-fitted, so the run anneals and ends near its deadline. (The tolerance, at most half
    an epoch, is a band against flip-flopping between N and N+1 epochs on noise: without it an epoch's
    rounding ended runs up to 17% early.)

    Args:
        start_size, full_size: progressive resizing from ``start_size`` to ``full_size`` pixels.
        deadline: a ``clock()`` value by which everything must be done; ``None``: the planned epochs run.
        reserve: seconds needed after the last epoch, given the measured seconds of one validation pass.
        max_epochs: never plan more epochs than this.
        tolerance: seconds a plan may overrun before it is shrunk, and must leave free to be stretched
            (capped at half an epoch).
        val_every: validate every this many epochs (and after the last); ``0``: measured.
        clock: the time source (``time.perf_counter``; tests give a fake one).
        notes: re-fits and the measured validation interval are appended here (the run's ``auto`` notes).
    """

    def __init__(self, start_size: int, full_size: int, *, deadline: float | None = None,
                 reserve=lambda val_seconds: 0.0, max_epochs: int = 100, val_every: int = 1,
                 min_epochs: int = 1, tolerance: float = 0.0, clock=time.perf_counter,
                 notes: list[str] | None = None) -> None:
        self.start_size, self.full_size, self.deadline, self.reserve = start_size, full_size, deadline, reserve
        self.tolerance = tolerance
        self.min_epochs, self._floor_said = min_epochs, False
        self.max_epochs, self.clock, self.notes = max_epochs, clock, notes if notes is not None else []
        # (train s, relative cost, other s: validation + saving)
        self.epochs: list[tuple[float, float, float]] = []
        self.planned: int | None = None  # the re-fitted number of epochs (saved in checkpoints)
        self.val_every, self.measure_val_every = val_every or 1, not val_every
        self.val_seconds: float | None = None  # the last validation pass
        self._started, self._ended, self._val_started = 0.0, None, None
        self._size = full_size

    def state_dict(self) -> dict:
        return {"planned": self.planned, "val_every": self.val_every, "measure_val_every": self.measure_val_every}

    def load_state_dict(self, state: dict) -> None:
        self.planned = state.get("planned")
        self.val_every = state.get("val_every", self.val_every)
        self.measure_val_every = state.get("measure_val_every", self.measure_val_every)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.planned is not None:  # resumed after a re-fit: the re-fitted length
            trainer.fit_loop.max_epochs = self.planned

    def _progress(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None:
            return schedule.progress(trainer.global_step)
        return trainer.current_epoch / max(trainer.max_epochs or 1, 1)

    def validates(self, epoch: int, max_epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) of ``max_epochs`` ends with a validation pass."""
        return (epoch + 1) % self.val_every == 0 or epoch + 1 >= max_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self.clock()
        if self.epochs and self._ended is not None:  # checkpoint saves after the last epoch's end
            training, cost, other = self.epochs[-1]
            self.epochs[-1] = (training, cost, other + max(now - self._ended, 0.0))
        self._size = train_size(self._progress(trainer, pl_module), self.start_size, self.full_size)
        dm = trainer.datamodule
        if dm is not None:  # (plainnet's ImageDataModule)
            dm.train_size = self._size if self._size < self.full_size else None
        # Lightning validates after epoch e when (e + 1) % check_val_every_n_epoch == 0: set per epoch.
        validate = self.validates(trainer.current_epoch, trainer.fit_loop.max_epochs) or self._likely_last()
        trainer.check_val_every_n_epoch = 1 if validate else trainer.current_epoch + 2
        self._started, self._ended = now, None

    def _recent(self) -> list[tuple[float, float, float]]:
        """The last three epochs but the first (it pays one-time warm-up costs), or the first alone."""
        return self.epochs[1:][-3:] or self.epochs

    def _likely_last(self) -> bool:
        """Under a deadline, whether no epoch is likely to fit after the one starting now: then it is
        validated, so a run the budget stops early still scores its last weights."""
        if self.deadline is None or not self.epochs or self.val_every == 1:
            return False
        # (the longest of the recent epochs: validating one epoch too many costs little, one too few
        # leaves the run's last weights unscored)
        epoch = max(e[0] + e[2] for e in self._recent()) * 1.03
        val = self.val_seconds or 0.0
        return self.deadline - self.clock() - epoch - val - self.reserve(val) < epoch + val / self.val_every

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_started = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None:
            self.val_seconds, self._val_started = self.clock() - self._val_started, None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = self.clock()
        elapsed = self._ended - self._started
        training = pl_module.train_seconds if getattr(pl_module, "train_seconds", None) else elapsed
        self.epochs.append((training, step_cost(self._size, self.full_size), max(elapsed - training, 0.0)))
        if self.measure_val_every and self.val_seconds is not None:
            self._choose_val_every(training)
        if self.deadline is None or trainer.should_stop:
            return
        done = trainer.current_epoch + 1
        left_planned = trainer.fit_loop.max_epochs - done
        recent = self._recent()
        per_cost = sum(e[0] for e in recent) / max(sum(e[1] for e in recent), 1e-9)
        val = self.val_seconds or 0.0
        # Per epoch besides training: saving, and a validation pass every val_every epochs.
        other = max(sum(e[2] for e in recent) / len(recent) - val, 0.0) + val / self.val_every
        # (3% margin on the epoch time: a re-fit is not undone by the next epoch's noise)
        per_cost, other, val = per_cost * 1.03, other * 1.03, val * 1.03
        # (the last epoch is always validated)
        remaining = self.deadline - self.clock() - self.reserve(val) - val * (1 - 1 / self.val_every)
        progress = self._progress(trainer, pl_module)
        most = self.max_epochs - done
        tolerance = min(self.tolerance, 0.5 * (per_cost + other))
        if self._need(progress, per_cost, other, left_planned) <= remaining + tolerance:
            # The plan fits (within the tolerance): stretched only when more epochs fit with it to spare,
            # and only while the images still grow (a late stretch would re-warp the annealing tail).
            roomy = self._epochs_that_fit(progress, per_cost, other, remaining - tolerance, most)
            fit = roomy if roomy > left_planned and progress < FULL_SIZE_AT else left_planned
        else:
            fit = self._epochs_that_fit(progress, per_cost, other, remaining, most)
        if done + fit < self.min_epochs:  # never below the floor: a model that learns, past the budget
            fit = self.min_epochs - done
            if not self._floor_said:
                self._floor_said = True
                over = max(self._need(progress, per_cost, other, fit) - remaining, 0.0)
                log.warning("budget: the time budget ends before the floor of %d epochs; training them to the "
                            "end (~%.0f s past the budget)", self.min_epochs, over)
        if fit != left_planned:
            self._refit(trainer, pl_module, done, fit, remaining)

    def _choose_val_every(self, training: float) -> None:
        """After the first epoch: validate every epoch if a pass costs <= VAL_SHARE of the training."""
        self.measure_val_every = False
        every = min(MAX_VAL_EVERY, max(1, math.ceil(self.val_seconds / max(VAL_SHARE * training, 1e-9))))
        if every > 1:
            self.val_every = every
            note = (f"val_every={every} (a validation pass took {self.val_seconds:.1f} s, "
                    f"{self.val_seconds / max(training, 1e-9):.0%} of an epoch's {training:.1f} s of training; "
                    "the last epoch is always validated)")
            self.notes.append(note)
            log.info("auto: %s", note)

    def _need(self, progress: float, per_cost: float, other: float, k: int) -> float:
        """Seconds that ``k`` more epochs take, from ``progress`` on."""
        sizes = [train_size(progress + (1 - progress) * j / k, self.start_size, self.full_size) for j in range(k)]
        return sum(step_cost(s, self.full_size) * per_cost + other for s in sizes)

    def _epochs_that_fit(self, progress: float, per_cost: float, other: float, remaining: float,
                         most: int) -> int:
        best = 0
        for k in range(1, max(most, 0) + 1):
            if self._need(progress, per_cost, other, k) > remaining:
                break
            best = k
        return best

    def _refit(self, trainer: L.Trainer, pl_module: L.LightningModule, done: int, fit: int, remaining: float) -> None:
        before = trainer.fit_loop.max_epochs
        self.planned = done + fit
        trainer.fit_loop.max_epochs = self.planned
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None and fit > 0:
            steps = max(int(trainer.num_training_batches), 1)
            schedule.refit(trainer.global_step, trainer.global_step + fit * steps)
        if fit == 0:
            trainer.should_stop = True
        note = (f"epochs re-fitted from {before} to {self.planned} after epoch {done}: "
                f"{max(remaining, 0):.0f} s left in the time budget")
        self.notes.append(note)
        log.info("budget: %s", note)
