"""``plainnet.train``: a folder of images in, a trained model and a self-describing run directory out.

Read top-down (after nanoGPT's train.py): resolve the config, load the data, build the model, assemble
the Lightning Trainer, fit, then score the best weights on the held-out split.

A run directory holds: ``config.yaml`` (resolved), ``split.json``, ``classes.json``, ``best.pt`` and
``last.pt`` (plainnet checkpoints), ``checkpoints/last.ckpt`` (Lightning's, for ``--resume``),
``metrics.csv``, ``curves.png``, TensorBoard logs under ``tb/``, ``train.log`` and ``results.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import torch

from ..data.folder import Splits, display_path
from ..config import AUTO, RunConfig, apply_overrides, config_from_dict, load_config
from ..errors import ConfigError, WeightsError, writing_into
from ..run_dir import RunDir

__all__ = ["TrainResult", "train", "load_data", "data_facts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    #: The monitored validation metric of the best epoch, and that epoch (0-based).
    best_metric: float
    best_epoch: int
    #: Scores of the best weights on the held-out split(s): accuracy, balanced accuracy, with TTA.
    final: dict
    epochs_run: int
    seconds: float
    config: RunConfig
    notes: tuple[str, ...] = ()
    #: ``finished``, or ``did_not_learn`` (held-out accuracy no better than the largest class: ``problem``
    #: says why and what to change); ``warnings``: lesser problems the run noticed.
    status: str = "finished"
    problem: str = ""
    warnings: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- data


def load_data(cfg: RunConfig):
    """The dataset named by ``cfg.data.path`` (see :func:`plainnet.data.sources.load_source`)."""
    from ..data.sources import load_source

    d = cfg.data
    return load_source(d.path, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.seed)


def data_facts(source):
    """Size, classes and typical image side: what the automatic recipe looks at."""
    from PIL import Image

    from .recipe import DataFacts

    if isinstance(source, Splits):
        labels = [s.label for s in source.train]
        sides = []
        for s in source.train[:: max(1, len(source.train) // 64)]:
            try:
                with Image.open(s.path) as im:  # header only, no decoding
                    sides.append(min(im.size))
            except (OSError, ValueError, Image.DecompressionBombError):  # decoding reports these files later
                continue
        typical = sorted(sides)[len(sides) // 2] if sides else 224
    else:
        labels = source.train_labels.tolist()
        typical = min(source.train_images.shape[1:3])
    counts = [labels.count(c) for c in range(len(source.classes))]
    return DataFacts(num_train=len(labels), num_classes=len(source.classes), class_counts=tuple(counts),
                     typical_side=int(typical))


# ----------------------------------------------------------------------------- run directory


def _distributed_env() -> tuple[int, int]:
    """(world size, rank) when launched by torchrun / Lightning's launcher, else (1, 0)."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


#: How a DDP child process launched by Lightning (which re-runs this command) learns the run directory
#: its launcher chose: set only around ``trainer.fit``, where Lightning copies the environment into the
#: children (:func:`_children_use`), and read only by a child (:func:`_launched_run_dir`).
CHILD_RUN_DIR = "PLAINNET_RUN_DIR"


def _launched_run_dir() -> Path | None:
    """The run directory a DDP child's launcher chose (``LOCAL_RANK`` > 0 from Lightning's launcher)."""
    child = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    return Path(os.environ[CHILD_RUN_DIR]) if child and os.environ.get(CHILD_RUN_DIR) else None


@contextmanager
def _children_use(run_dir: Path):
    """Processes launched inside this block (Lightning's DDP children) train into ``run_dir``."""
    before = os.environ.get(CHILD_RUN_DIR)
    os.environ[CHILD_RUN_DIR] = str(run_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CHILD_RUN_DIR, None)
        else:
            os.environ[CHILD_RUN_DIR] = before


def _new_run_dir(cfg: RunConfig, rank: int) -> Path:
    """The run directory of a new run. Every process of a distributed run must agree on it: Lightning's
    children get their launcher's; torchrun's processes share its run id."""
    launched = _launched_run_dir()
    if launched is not None:
        return launched
    name = cfg.train.name
    if not name:
        world, _ = _distributed_env()
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
        stamp = run_id[:8] if world > 1 and run_id and run_id != "none" else datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{cfg.model.name}-{stamp}"
    run_dir = Path(cfg.train.runs_dir) / name
    # Only the first process checks: under torchrun the others may look after it has started writing.
    if rank == 0 and RunDir.is_run(run_dir):
        raise ConfigError(f"run directory {run_dir} already exists: pick another --train.name or --resume it")
    return run_dir


class _RunLogFile(logging.FileHandler):
    """train.log. A disk that fills up stops the log file quietly (the console keeps the messages, and
    the failing save reports the disk) instead of printing logging's own traceback on every line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        logging.getLogger("plainnet").removeHandler(self)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # flushing the last lines onto a full disk
            pass


def _attach_log_file(run_dir: Path) -> logging.Handler:
    """train.log gets plainnet's INFO messages (the automatic choices...) also when ``train()`` is called
    from Python, where nobody set the logger's level; the level is restored by :func:`_detach_log_file`."""
    handler = _RunLogFile(RunDir(run_dir).log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("plainnet")
    handler.level_before = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def _detach_log_file(handler: logging.Handler) -> None:
    logger = logging.getLogger("plainnet")
    logger.removeHandler(handler)
    logger.setLevel(handler.level_before)
    handler.close()


# ----------------------------------------------------------------------------- model


def build_model(cfg: RunConfig, num_classes: int):
    """The backbone for ``cfg.model``, fine-tuned from ``cfg.model.pretrained`` when given."""
    from ..models import create_model, load_weights, traits_of

    m = cfg.model
    kwargs = {}
    if not traits_of(m.name).foreign:  # (plainnet's architecture options)
        kwargs = {"output_stride": m.output_stride, "drop_rate": m.drop_rate}
        if m.head:
            kwargs["head"] = m.head
        if m.train_form == "online":
            kwargs["train_form"] = "online"
    if m.pretrained == "imagenet":
        model = create_model(m.name, num_classes=num_classes, pretrained=True, **kwargs)
        log.info("fine-tuning from the ImageNet weights of %s (%s); new %d-class head", m.name,
                 model.pretrained_cfg["source"], num_classes)
        return model
    model = create_model(m.name, num_classes=num_classes, **kwargs)
    if m.pretrained:
        report = load_weights(model, m.pretrained, exclude_head=True)
        log.info("fine-tuning from %s (%s weights); new %d-class head", m.pretrained, report.dialect, num_classes)
    return model


def _checked(model, num_classes: int):
    from ..models.base import classifier_of

    out = getattr(classifier_of(model), "out_features", num_classes)
    if out != num_classes:
        raise ConfigError(f"the given model predicts {out} classes but the data has {num_classes}")
    return model.train()


def _frozen_modules(model, stages: int) -> list[str]:
    if stages <= 0:
        return []
    from ..models.base import PlainClassifier

    if not isinstance(model, PlainClassifier):
        raise ConfigError("model.freeze_stages needs a plainnet model (it freezes whole stages)")
    names = []
    modules = dict((id(mod), n) for n, mod in model.named_modules())
    for stage in model.stage_modules()[:stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
        if id(stage) in modules:
            names.append(modules[id(stage)])
    return names


def _load_teacher(path: str):
    from ..models import load_model

    p = Path(path)
    return load_model(RunDir(p).weights() if p.is_dir() else p).eval()


# ----------------------------------------------------------------------------- trainer


def _precision(cfg: RunConfig) -> str:
    return {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}[cfg.train.precision]


def _trainer(cfg: RunConfig, run_dir: Path, callbacks: list, *, max_epochs: int):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from .callbacks import AtomicCheckpointIO

    t = cfg.train
    callbacks = list(callbacks)
    # One rolling checkpoint, rewritten (atomically) after every epoch: what --resume continues from.
    # (also after epochs that skip validation: TrainingClock decides that per epoch)
    run = RunDir(run_dir)
    callbacks.append(ModelCheckpoint(dirpath=run.checkpoints, filename=run.resume_checkpoint.stem, save_top_k=1,
                                     every_n_epochs=1, enable_version_counter=False, save_on_train_epoch_end=True))
    if t.patience > 0:
        mode = "min" if t.monitor.endswith("loss") else "max"
        # Counted in validations, read when one has run (never a stale value from an earlier epoch).
        callbacks.append(EarlyStopping(monitor=t.monitor, mode=mode, patience=t.patience,
                                       check_on_train_epoch_end=False))
    if t.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    world, _ = _distributed_env()
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ and world > 1
    devices = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if under_torchrun else t.devices
    num_nodes = world // devices if under_torchrun else t.num_nodes
    distributed = devices * num_nodes > 1
    return L.Trainer(
        accelerator="gpu" if t.accelerator == "gpu" else "cpu",
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if distributed else "auto",
        precision=_precision(cfg),
        max_epochs=max_epochs,
        gradient_clip_val=t.grad_clip or None,
        callbacks=callbacks,
        # (plainnet writes metrics.csv itself, from a history that survives --resume; Lightning's CSV
        # logger would delete its own file on every resume)
        logger=[TensorBoardLogger(run_dir, name=RunDir.TENSORBOARD, version="")],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the data module shards batches itself, by (seed, epoch)
        deterministic=False,
        log_every_n_steps=10,
    )


# ----------------------------------------------------------------------------- the flow


def train(
    config: RunConfig | dict | str | Path | None = None,
    *,
    overrides: dict[str, str] | list[str] | None = None,
    resume: str | Path | None = None,
    model_instance=None,
    started: float | None = None,
    **data_and_model,
) -> TrainResult:
    """Train a classifier; see :class:`RunConfig` for every option.

    Args:
        config: a :class:`RunConfig`, a nested dict, or a YAML file path (``None``: defaults).
        overrides: dotted overrides, e.g. ``{"optim.lr": "0.05"}``.
        resume: a run directory to continue from its last checkpoint (its saved config is used; epochs
            may be extended with an override).
        model_instance: train this network (e.g. a pruned one) instead of building ``model.name``.
        started: when the command began (a ``time.perf_counter()`` value); with ``epochs: auto`` on a
            CPU, ``train.budget_minutes`` counts from it (default: from this call).
        **data_and_model: shortcuts ``data=DIR``, ``model=NAME``, ``epochs=N``.

    Returns:
        A :class:`TrainResult` with the run directory, the best checkpoint and the final scores.
    """
    from .callbacks import StartupTimer

    t0 = time.perf_counter() if started is None else started
    startup = StartupTimer(t0)
    startup.mark("start-up and imports")
    # 1. Configuration: defaults < file < overrides (< the saved config of a resumed run).
    cfg, resumed_dir, ckpt_path = _configure(config, overrides, resume, data_and_model)
    if resume is None:
        cfg = _fetch_first(cfg, t0)
    # 2. Data, and every "auto" resolved from it and from this machine.
    source = load_data(cfg)
    startup.mark("data scan")
    cfg, notes, deadline = _resolve(cfg, source, t0, budgeted=cfg.train.epochs == AUTO and resume is None)
    startup.mark("recipe and speed probe")
    # 3. The run directory; 4. assemble and fit; 5. score the best weights (all in _fit).
    _, rank = _distributed_env()
    run = _Run(cfg=cfg, notes=notes, source=source, run_dir=resumed_dir or _new_run_dir(cfg, rank),
               ckpt_path=ckpt_path, rank=rank, t0=t0, deadline=deadline, startup=startup)
    return _in_run_dir(run, new=resume is None, fit=lambda: _fit(run, model_instance))


def _configure(config, overrides, resume, data_and_model) -> tuple[RunConfig, Path | None, Path | None]:
    """The config, and for ``--resume`` the run directory and the checkpoint it continues from."""
    run_dir = ckpt_path = None
    if resume is not None:
        run_dir = Path(resume)
        if not RunDir.is_run(run_dir):
            raise ConfigError(f"cannot resume {run_dir}: no config.yaml (not a plainnet run directory)")
        run = RunDir(run_dir)
        cfg, last = run.config(), run.resume_checkpoint
        ckpt_path = last if last.is_file() else None
        if ckpt_path is None:
            log.warning("no checkpoint in %s yet: starting it again from epoch 1", run_dir)
        else:
            _check_resumable(ckpt_path, run_dir)
    elif isinstance(config, RunConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = config_from_dict(config)
    else:
        cfg = load_config(config)
    shortcuts = {"data": "data.path", "model": "model.name", "epochs": "train.epochs"}
    for key, value in data_and_model.items():
        if key not in shortcuts:
            raise TypeError(f"train() got an unexpected keyword argument {key!r}")
        cfg = apply_overrides(cfg, {shortcuts[key]: value})
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg, run_dir, ckpt_path


def _fetch_first(cfg: RunConfig, t0: float) -> RunConfig:
    """Published weights are fetched (or refused) before any data is read or a run directory made; a
    ``NAME:imagenet`` teacher is fine-tuned first."""
    if cfg.model.pretrained == "imagenet" and cfg.model.name != AUTO:
        from ..models.pretrained import fetch, weight_source

        source = weight_source(cfg.model.name)
        if source is not None:
            fetch(source)
    if cfg.distill.teacher.endswith(":imagenet"):
        cfg = _fine_tune_teacher(cfg, t0)
    return cfg


def _resolve(cfg: RunConfig, source, t0: float, *, budgeted: bool):
    """The resolved config, its notes and the command's deadline (``None``: the planned epochs run)."""
    import lightning as L

    from .recipe import detect_machine, resolve

    machine = detect_machine()
    world, _ = _distributed_env()
    if world > 1 or cfg.train.devices not in (AUTO, 1) or cfg.train.num_nodes not in (AUTO, 1):
        # Every process must choose alike: no timing in each of them, no re-fitting to each one's clock.
        machine, budgeted = replace(machine, probe=None), False
    if cfg.train.threads:  # (before the probe: it measures what training will get)
        torch.set_num_threads(cfg.train.threads)
    cfg, notes = resolve(cfg, data_facts(source), machine, spent_seconds=time.perf_counter() - t0)
    deadline = t0 + cfg.train.budget_minutes * 60 if budgeted and cfg.train.accelerator == "cpu" else None
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    return cfg, notes, deadline


@dataclass
class _Run:
    """One training run being fitted: what every step after the recipe reads."""
    cfg: RunConfig
    notes: list[str]
    source: object
    run_dir: Path
    ckpt_path: Path | None
    rank: int
    t0: float
    deadline: float | None
    startup: object


def _in_run_dir(run: _Run, *, new: bool, fit) -> TrainResult:
    """``fit()`` with the run directory made, train.log attached, and a failure recorded (or the
    unfinished directory of a new run removed)."""
    created = not run.run_dir.exists()
    try:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        handler = _attach_log_file(run.run_dir) if run.rank == 0 else None
        for note in run.notes:  # (into train.log too)
            log.info("auto: %s", note)
        try:
            with writing_into(run.run_dir):  # a disk that fills up mid-write names the run directory
                return fit()
        finally:
            if handler is not None:
                _detach_log_file(handler)
    except BaseException as e:
        if run.rank == 0 and new and created:
            _record_failure(run.run_dir, e, time.perf_counter() - run.t0)
        raise


def _fine_tune_teacher(cfg: RunConfig, t0: float) -> RunConfig:
    """``distill.teacher NAME:imagenet``: an ImageNet model knows none of this data's classes, so NAME
    is first fine-tuned from its published weights on the same data (its own run, ``<name>-teacher``,
    with half of a time budget), and the student distils from that run."""
    from ..config import DistillConfig, ModelConfig

    name = cfg.distill.teacher.rpartition(":")[0]
    student = cfg.train.name or f"{cfg.model.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    budget = cfg.train.budget_minutes
    log.info("distill.teacher %s: fine-tuning %s from its ImageNet weights on this data first (%s)",
             cfg.distill.teacher, name, f"{budget / 2:g} of the {budget:g} min budget" if cfg.train.epochs == AUTO
             else f"{cfg.train.epochs} epochs")
    teacher = replace(cfg, model=replace(ModelConfig(), name=name, pretrained="imagenet"), distill=DistillConfig(),
                      train=replace(cfg.train, name=f"{student}-teacher", budget_minutes=budget / 2))
    result = train(teacher, started=t0)
    return replace(cfg, distill=replace(cfg.distill, teacher=str(result.run_dir)),
                   train=replace(cfg.train, name=student))


def _check_resumable(last: Path, run_dir: Path) -> None:
    """Read the checkpoint ``--resume`` continues from before anything in the run is touched: a bad one
    is one error naming it and the run's last good weights, and the run stays as it was."""
    from ..model_files import read_torch_file

    try:
        ckpt = read_torch_file(last, "checkpoint")
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
            raise WeightsError(f"{last} is not a Lightning training checkpoint")
    except WeightsError as e:
        best = RunDir(run_dir).best
        kept = f"; its best weights so far, {best}, can still be evaluated and exported" if best.is_file() else ""
        raise WeightsError(f"cannot resume {run_dir}: {e}. Nothing in the run was changed{kept}; or start a new "
                           "run") from None


def _record_failure(run_dir: Path, error: BaseException, seconds: float) -> None:
    """A run that failed before it saved any weights leaves nothing behind; one that saved some is kept
    (it can be resumed, evaluated and exported) and its results.json says how it ended, so ``runs/``
    never holds a directory that looks finished but is not."""
    run = RunDir(run_dir)
    if not run.has_weights():
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("removed the unfinished run directory %s", run_dir)
        return
    status = "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "failed"
    message = " ".join(str(error).split()) or type(error).__name__
    try:
        run.write_results({"status": status, "error": message, "seconds": seconds})
    except OSError:  # the disk that failed the run may fail this too; the run stays resumable
        pass


#: Seconds after training besides the held-out passes: last.pt, curves.png, results.json, the report's
#: plots and files (~3 s for the potato run on a 2-core CPU).
AFTER_TRAINING_SECONDS = 4.0
#: Share of the time budget a re-fitted plan may overrun rather than drop an epoch (TrainingClock).
BUDGET_TOLERANCE = 0.03


def _fit(run: _Run, model_instance=None) -> TrainResult:
    """Assemble the data, the task and the Trainer; fit; score the best weights on the held-out split(s)."""
    cfg, rd = run.cfg, RunDir(run.run_dir)
    dm = _data_module(cfg, run.source)
    run.startup.mark("decoding")
    classes = list(dm.classes)
    if run.rank == 0:
        rd.save_config(cfg, run.notes)
        rd.write_classes(classes)
        if isinstance(run.source, Splits):  # the files actually used; unreadable ones under "skipped"
            rd.write_split(dm.used_splits().to_json())
        log.info("data: %d classes, %d train images %s; run directory %s", len(classes), dm.num_train(),
                 dict(zip(classes, dm.class_counts())), run.run_dir)
    model = build_model(cfg, len(classes)) if model_instance is None else _checked(model_instance, len(classes))
    task = _task(cfg, model, dm)
    from .callbacks import DivergenceGuard, RunRecorder, TargetStop

    meta = {"classes": classes, "preprocess": dm.preprocess.to_dict(), "config": asdict(cfg)}
    recorder = RunRecorder(run.run_dir, meta, monitor=cfg.train.monitor,
                           mode="min" if cfg.train.monitor.endswith("loss") else "max")
    clock = _clock(cfg, dm, run.deadline, run.notes)
    callbacks = [clock, DivergenceGuard(cfg.optim.lr), recorder, run.startup]
    if cfg.train.target_acc:
        callbacks.append(TargetStop(cfg.train.target_acc, cfg.train.monitor, run.notes))
    trainer = _trainer(cfg, run.run_dir, callbacks, max_epochs=cfg.train.epochs)
    run.startup.mark("model and trainer")
    with _children_use(run.run_dir):  # Lightning's DDP launcher starts the other processes in fit
        trainer.fit(task, datamodule=dm, ckpt_path=run.ckpt_path, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if cfg.train.val_every == 0:  # measured in the first epoch: config.yaml names every choice
        run.cfg = cfg = replace(cfg, train=replace(cfg.train, val_every=clock.val_every))
        if run.rank == 0:
            rd.save_config(cfg, run.notes)
    final, verdict = _score(run, dm, recorder) if trainer.is_global_zero and rd.best.is_file() else ({}, None)
    return TrainResult(run_dir=run.run_dir, best_checkpoint=rd.best, best_metric=recorder.best or 0.0,
                       best_epoch=recorder.best_epoch or 0, final=final, epochs_run=len(recorder.history),
                       seconds=time.perf_counter() - run.t0, config=cfg, notes=tuple(run.notes),
                       **({} if verdict is None else {"status": verdict.status, "problem": verdict.problem,
                                                      "warnings": verdict.warnings}))


def _data_module(cfg: RunConfig, source):
    """The decoded, cached data at the resolved size, with the statistics the weights expect."""
    from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
    from ..data.datamodule import ImageDataModule
    from ..data.preprocess import Preprocess

    d = cfg.data
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if cfg.model.pretrained == "imagenet":  # the statistics the published weights were trained with
        from ..models.pretrained import pretrained_preprocess

        published = pretrained_preprocess(cfg.model.name)
        mean, std = tuple(published["mean"]), tuple(published["std"])
    dm = ImageDataModule(source, Preprocess(d.image_size, d.crop_ratio, mean, std), cfg.augment,
                         batch_size=d.batch_size, seed=cfg.train.seed, cache=d.cache, cache_dir=d.cache_dir,
                         workers=d.workers, balance=d.balance, normalize_from_data=d.normalize == "data",
                         channels_last=cfg.train.channels_last)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _task(cfg: RunConfig, model, dm):
    """The LightningModule: the model (channels_last, frozen stages, compiled) with its loss and optimizer."""
    from .task import ClassificationTask

    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = _frozen_modules(model, cfg.model.freeze_stages)
    teacher = _load_teacher(cfg.distill.teacher) if cfg.distill.teacher else None
    m = cfg.model
    task = ClassificationTask(
        model, num_classes=len(dm.classes), optim=cfg.optim, schedule=cfg.schedule, lr=cfg.optim.lr,
        epochs=cfg.train.epochs, label_smoothing=cfg.train.label_smoothing,
        class_weights=dm.class_weights() if cfg.data.balance == "loss" else None, ema_decay=cfg.train.ema,
        teacher=teacher, distill=cfg.distill if teacher is not None else None, backbone_lr_scale=m.backbone_lr_scale,
        head_name=getattr(model, "classifier_name", None) if m.pretrained else None,
        frozen=frozen, head_only_epochs=m.freeze_epochs, seed=cfg.train.seed, fuse_for_eval=not cfg.train.compile)
    if cfg.train.compile:
        task.model = torch.compile(model)
    return task


def _clock(cfg: RunConfig, dm, deadline: float | None, notes: list[str]):
    """Progressive resizing, the validation interval and the budget re-fit (:class:`TrainingClock`)."""
    from ..data.augment import tta_views
    from .callbacks import TrainingClock
    from .recipe import FINETUNE_MAX_EPOCHS, MAX_EPOCHS

    # After training, in fp32 (each pass ~1.5x a validation pass): the final scores of the held-out
    # split(s) with every test-time view, then the report's evaluation of the validation split, plain and
    # with each view. (Measured on CIFAR-10's 10k test images: 55 s after training, with 5.8 s passes.)
    views = len(tta_views(torch.zeros(1, 3, 8, 8), cfg.augment.tta))
    held_out = (dm.num_images("val") + dm.num_images("test")) / max(dm.num_images("val"), 1)
    passes = views * held_out + (1 + views if views > 1 else 1)
    t = cfg.train
    return TrainingClock(cfg.data.start_size, cfg.data.image_size, deadline=deadline,
                         max_epochs=FINETUNE_MAX_EPOCHS if cfg.model.pretrained else MAX_EPOCHS,
                         reserve=lambda val: val * 1.5 * passes + AFTER_TRAINING_SECONDS, val_every=t.val_every,
                         min_epochs=t.min_epochs, tolerance=BUDGET_TOLERANCE * t.budget_minutes * 60, notes=notes)


def _score(run: _Run, dm, recorder):
    """The best weights, re-parameterized, scored on the held-out split(s) with and without test-time
    augmentation; the verdict; results.json."""
    from ..models import load_model
    from ..models.reparam import reparameterize
    from .scoring import score_datamodule

    cfg, rd = run.cfg, RunDir(run.run_dir)
    best = reparameterize(load_model(rd.best))  # the same function, at deploy speed
    if cfg.train.channels_last:
        best = best.to(memory_format=torch.channels_last)
    final = {split: score_datamodule(best, dm, split, tta=cfg.augment.tta)
             for split in ("val", "test") if dm.has_split(split)}
    skipped = dm.used_splits().skipped if isinstance(run.source, Splits) else dm.bad_files
    verdict = _verdict(cfg, final, recorder.history, run.notes, planned=cfg.train.epochs)
    for warning in verdict.warnings:
        log.warning("%s", warning)
    rd.write_results({
        "status": verdict.status, **({"problem": verdict.problem} if verdict.problem else {}),
        "warnings": list(verdict.warnings), "best_epoch": recorder.best_epoch, "best_metric": recorder.best,
        "monitor": cfg.train.monitor, "epochs_run": len(recorder.history), "seconds": time.perf_counter() - run.t0,
        "startup_seconds": run.startup.seconds, "final": final, "auto": run.notes,
        "bad_files": [[display_path(p), r] for p, r in skipped]})
    return final, verdict


def _verdict(cfg: RunConfig, final: dict, history: list[dict], notes: list[str], planned: int):
    """Whether the run learned (:func:`plainnet.engine.verdict.assess`), from its held-out scores."""
    from .verdict import assess

    scores = final.get("val") or final.get("test") or {}
    refitted = any(n.startswith("epochs re-fitted") for n in notes)  # (not early stopping, not a target)
    return assess(scores.get("acc"), scores.get("largest_class_share"), history, epochs_planned=planned if refitted else 0,
                  lr=cfg.optim.lr, lr_by_hand=not any(n.startswith("lr=") for n in notes),
                  floor=cfg.train.min_epochs)
