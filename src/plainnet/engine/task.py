"""The LightningModule: image classification (optionally distilled from a teacher).

It holds the task -- loss, metrics, optimizer and schedule, EMA weights -- and receives the backbone from
outside (:func:`plainnet.create_model`); the backbone is not saved into the hyper-parameters.

Knowledge distillation: "Distilling the Knowledge in a Neural Network", Hinton, Vinyals, Dean, 2015,
arXiv:1503.02531 (KL divergence at temperature T, scaled by T^2, plus cross-entropy with the labels).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics.classification import MulticlassAccuracy

from ..models.reparam import reparameterize
from ..config import DistillConfig, OptimConfig, ScheduleConfig
from .schedule import Schedule

log = logging.getLogger(__name__)

__all__ = ["ClassificationTask", "param_groups", "distillation_loss"]


def distillation_loss(student_logits, teacher_logits, targets, *, temperature: float, alpha: float,
                      label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                  reduction="batchmean", log_target=True) * (t * t)
    ce = F.cross_entropy(student_logits, targets, weight=weight, label_smoothing=label_smoothing)
    return alpha * kl + (1 - alpha) * ce


def _ema_update(decay: float):
    """EMA for floating-point tensors; integer buffers (BN's batch counters) are copied, not averaged
    (averaging would truncate them)."""
    ema = get_ema_multi_avg_fn(decay)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if averaged and not averaged[0].is_floating_point():
            for a, c in zip(averaged, current):
                a.copy_(c)
        else:
            ema(averaged, current, num_averaged)

    return update


def param_groups(model: nn.Module, cfg: OptimConfig, lr: float, backbone_lr_scale: float = 1.0,
                 head_name: str | None = None) -> list[dict]:
    """Split parameters into (backbone | head) x (decay | no decay) groups.

    BatchNorm weights and all biases (every parameter with fewer than 2 dims) get no weight decay when
    ``cfg.no_decay_norm_bias``; the head keeps the full learning rate when the backbone's is scaled.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = bool(head_name) and (name == head_name or name.startswith(head_name + "."))
        no_decay = cfg.no_decay_norm_bias and p.ndim <= 1
        groups.setdefault((is_head, no_decay), []).append(p)
    out = []
    for (is_head, no_decay), params in sorted(groups.items()):
        scale = 1.0 if is_head else backbone_lr_scale
        out.append({"params": params, "lr": lr * scale, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                    "initial_lr_scale": scale})
    return out


class ClassificationTask(L.LightningModule):
    """Cross-entropy classification with label smoothing, class weights, EMA and optional distillation.

    Args:
        model: the network (any ``nn.Module`` mapping images to logits).
        num_classes: number of classes.
        optim, schedule, distill: config sections (plain dataclasses; saved as hyper-parameters).
        lr: the resolved peak learning rate.
        epochs: planned epochs (the schedule's length).
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class loss weights (imbalanced data) or ``None``.
        ema_decay: EMA decay of the weights (0: off). Validation then scores the averaged weights.
        teacher: a frozen teacher network for distillation, or ``None``.
        backbone_lr_scale, head_name, frozen: fine-tuning options.
        head_only_epochs: fine-tuning: only the head (``head_name``) trains for these first epochs; the
            rest of the network is frozen, BatchNorm statistics included.
        seed: reseeds the global RNG at each epoch start (dropout, MixUp), so a resumed run repeats
            the interrupted epoch exactly.
        fuse_for_eval: validate a re-parameterized copy of the weights (faster; off for compiled models).
    """

    def __init__(self, model: nn.Module, *, num_classes: int, optim: OptimConfig, schedule: ScheduleConfig,
                 lr: float, epochs: int, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None,
                 ema_decay: float = 0.0, teacher: nn.Module | None = None,
                 distill: DistillConfig | None = None, backbone_lr_scale: float = 1.0,
                 head_name: str | None = None, frozen: list[str] | tuple[str, ...] = (), seed: int = 0,
                 fuse_for_eval: bool = True, head_only_epochs: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters({
            "num_classes": num_classes, "optim": asdict(optim), "schedule": asdict(schedule), "lr": lr,
            "epochs": epochs, "label_smoothing": label_smoothing, "ema_decay": ema_decay,
            "distill": asdict(distill) if distill else None, "backbone_lr_scale": backbone_lr_scale,
            "seed": seed, "head_only_epochs": head_only_epochs,
        })
        self.model = model
        self.optim_cfg, self.schedule_cfg, self.distill_cfg = optim, schedule, distill
        self.lr, self.epochs, self.seed = lr, epochs, seed
        self.label_smoothing, self.backbone_lr_scale, self.head_name = label_smoothing, backbone_lr_scale, head_name
        self.frozen = tuple(frozen)
        self._backbone_params: list | None = None  # (found at the first head-only epoch)
        self.head_only_epochs = head_only_epochs if head_name else 0
        if head_only_epochs and not head_name:
            log.warning("model.freeze_epochs=%d ignored: plainnet does not know this model's head", head_only_epochs)
        self.register_buffer("class_weights", class_weights if class_weights is not None else None,
                             persistent=False)
        self.ema = (AveragedModel(model, multi_avg_fn=_ema_update(ema_decay), use_buffers=True).requires_grad_(False)
                    if ema_decay > 0 else None)
        # The teacher is not a registered submodule: it is neither trained nor saved in checkpoints.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_bal_acc = MulticlassAccuracy(num_classes, average="macro")
        self.fuse_for_eval = fuse_for_eval
        self._val_model: nn.Module | None = None
        #: The learning-rate clock (set by ``configure_optimizers``); a time budget re-fits it.
        self.schedule: Schedule | None = None
        self.epoch_start = 0.0
        self.epoch_images = 0  # images this process trained on in the current epoch
        self.train_seconds: float | None = None  # the epoch's training time, before its validation

    # ------------------------------------------------------------------ the network being scored
    @property
    def eval_model(self) -> nn.Module:
        """The weights validation and exports use: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        torch.manual_seed(self.seed * 1_000_003 + self.current_epoch)
        for name in self.frozen:  # frozen stages keep their BN statistics too
            self.model.get_submodule(name).eval()
        if self.head_only_epochs:
            self._train_head_only(self.current_epoch < self.head_only_epochs)
        self.epoch_start, self.epoch_images, self.train_seconds = time.perf_counter(), 0, None

    def _train_head_only(self, head_only: bool) -> None:
        """Freeze (or release) everything but the head; the optimizer holds every parameter throughout
        (a frozen one has no gradient, so it is not stepped or decayed)."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile's wrapper: the model inside
        if self.trainer.world_size > 1:  # DDP registers the parameters that need gradients once, at the start
            if self.current_epoch == 0:
                log.warning("model.freeze_epochs is ignored with %d processes: every layer trains from the start",
                            self.trainer.world_size)
            return
        if self._backbone_params is None:
            head = {id(p) for p in model.get_submodule(self.head_name).parameters()}
            frozen = {id(p) for n in self.frozen for p in model.get_submodule(n).parameters()}
            self._backbone_params = [p for p in model.parameters() if id(p) not in head | frozen]
        for p in self._backbone_params:
            p.requires_grad_(not head_only)
        if head_only:
            model.eval()
            model.get_submodule(self.head_name).train()

    def _loss(self, logits, targets, x):
        if self._teacher:
            teacher = self._teacher[0]
            if teacher.training or next(teacher.parameters()).device != x.device:
                self._teacher[0] = teacher = teacher.to(x.device).eval()
            with torch.no_grad():
                teacher_logits = teacher(x).float()
            return distillation_loss(logits, teacher_logits, targets, temperature=self.distill_cfg.temperature,
                                     alpha=self.distill_cfg.alpha, label_smoothing=self.label_smoothing,
                                     weight=self.class_weights)
        return F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        loss = self._loss(logits.float(), y, x)
        hard = y.argmax(1) if y.ndim == 2 else y  # MixUp/CutMix give soft targets
        self.train_acc(logits.detach(), hard)
        self.epoch_images += len(x)
        rate = self.epoch_images * self.trainer.world_size / max(time.perf_counter() - self.epoch_start, 1e-6)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("img_s", rate, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        # (during fit's validation ``trainer.training`` is already False: ask what is being run instead)
        if self.trainer.state.fn == "fit" and self.train_seconds is None:
            self.train_seconds = time.perf_counter() - self.epoch_start
        # Validate the fused copy of the weights: the same function, at deploy-form speed (a RepVGG
        # block's three branches run as one 3x3 conv). A compiled model is validated as it is.
        self._val_model = reparameterize(self.eval_model) if self.fuse_for_eval else self.eval_model

    def on_validation_epoch_end(self) -> None:
        self._val_model = None

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = (self._val_model or self.eval_model)(x).float()
        loss = F.cross_entropy(logits, y)
        self.val_acc(logits, y)
        self.val_bal_acc(logits, y)
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, sync_dist=True, batch_size=len(x))
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val/balanced_acc", self.val_bal_acc, on_epoch=True)

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        cfg, lr = self.optim_cfg, self.lr
        groups = param_groups(self.model, cfg, lr, self.backbone_lr_scale, self.head_name)
        if cfg.name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        elif cfg.name == "adam":
            opt = torch.optim.Adam(groups, lr=lr)
        elif cfg.name == "adamw":
            opt = torch.optim.AdamW(groups, lr=lr)
        else:
            raise ValueError(f"unknown optimizer {cfg.name!r}")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        s = self.schedule_cfg
        self.schedule = Schedule(s.name, s.warmup_epochs / max(self.epochs, 1), s.min_lr_ratio, total)
        if s.name == "constant" and not s.warmup_epochs:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
