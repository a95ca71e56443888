"""Resolve every ``auto`` in a :class:`RunConfig` from the data and the machine, and say why.

The defaults encode what was measured on 2-core CPUs (each constant below says what and where;
the runs are in docs/benchmarks.md): RepVGG-A0, decoded-once
images at 96 px for photos (small images at their size, with less downsampling), bf16 autocast where the CPU
has native bf16, channels_last, SGD with Nesterov momentum on a one-cycle schedule, label smoothing, and
a class-weighted loss when classes are imbalanced. On a GPU: 224 px and mixed precision.
"""

from __future__ import annotations

import logging
import math
import os
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from ..config import AUTO, RunConfig
from ..errors import ConfigError
from ..models.registry import FamilyTraits, traits_of
from .schedule import mean_cost

__all__ = ["DataFacts", "Machine", "detect_machine", "resolve", "concrete", "cpu_supports_bf16"]

log = logging.getLogger(__name__)

#: Training rate in multiply-accumulates of the forward pass per second, per 2 cores, bf16 autocast +
#: channels_last. Measured here: RepVGG-A0 at 96 px 280 img/s x 0.25 GMACs = 70; at 32 px stride 16,
#: 370 x 0.12 = 44; stride 8, 156 x 0.49 = 76; 16 px stride 8, 500 x 0.12 = 61. fp32 is ~1.5x slower.
CPU_TRAIN_MACS_PER_S = 60e9
#: Share of the time budget planned for validation, the final scoring and the report.
RESERVE_SHARE = 0.05
MAX_EPOCHS = 100
#: The floor of a run trained from scratch: at least this many optimizer steps, and at least MIN_EPOCHS
#: epochs. Measured on the digits (RepVGG-A0, 8 px, fp32, SGD one-cycle): 90 steps 90.5% held-out, 135
#: steps 95.5%, 180 steps 95-97%; a minute's budget on a 2-core AVX2 CPU had planned 22 steps (10%).
FLOOR_STEPS, MIN_EPOCHS = 150, 3
#: Fine-tuning pretrained weights: more epochs than this rarely help (the features are already learned).
FINETUNE_MAX_EPOCHS = 15
#: When fewer epochs than this fit the budget at the automatic image size, photos train smaller (8 px at a
#: time, down to MIN_BUDGET_SIZE): more epochs at a lower resolution, as FFCV's short ImageNet schedules do.
ENOUGH_EPOCHS = 10
MIN_BUDGET_SIZE = 64


def _cpu_train_rate(m, image_size: int, num_classes: int, bf16: bool, cores: int) -> float:
    """Estimated training images/s on this CPU, from the model's MACs at this size."""
    from ..models import create_model, summarize

    kwargs = {} if traits_of(m.name).foreign else {"output_stride": int(m.output_stride)}
    try:
        with torch.device("meta"):
            macs = summarize(create_model(m.name, num_classes=num_classes, **kwargs), image_size).macs
    except Exception:  # an external model that cannot be built on the meta device: assume A0-like
        macs = 0.25e9 * (image_size / 96) ** 2
    return CPU_TRAIN_MACS_PER_S * (1.0 if bf16 else 1 / 1.5) * max(cores, 1) / 2 / max(macs, 1)


@dataclass(frozen=True)
class DataFacts:
    num_train: int
    num_classes: int
    class_counts: tuple[int, ...]
    #: Typical (median) shorter side of the source images in pixels.
    typical_side: int
    bytes_if_cached_at: dict | None = None


@dataclass(frozen=True)
class Machine:
    cuda: bool
    cpu_bf16: bool
    cuda_bf16: bool
    cores: int
    memory_bytes: int
    #: Measures training images/s on this CPU: ``probe(name, output_stride, image_size, num_classes,
    #: batch, precisions, layouts[, train_form=]) -> {(precision, channels_last): img/s}``
    #: (:func:`plainnet.engine.probe.measure_train_rates`). ``None``: precision from the CPU's flags,
    #: channels_last, and the speed estimated from the model's MACs.
    probe: Callable[..., dict[tuple[str, bool], float]] | None = None
    #: Why bf16 is not native here, when it is not (logged with the precision choice).
    bf16_note: str = "no native bf16 on this CPU"


def cpu_bf16() -> tuple[bool, str]:
    """Native bf16 in this process, and why not: :func:`plainnet.cpu.native_bf16` (the CPU's AVX-512
    BF16 or AMX, not capped away by ``ONEDNN_MAX_CPU_ISA``) and torch's oneDNN agreeing. Emulated bf16
    is several times slower than fp32."""
    from ..cpu import native_bf16

    native, why = native_bf16()
    if not native:
        return False, f"no native bf16: {why}"
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True, why
    except (AttributeError, RuntimeError):
        pass
    return False, "no native bf16: torch's oneDNN does not run bf16 on this CPU"


def cpu_supports_bf16() -> bool:
    """Native bf16 in this process (:func:`cpu_bf16`)."""
    return cpu_bf16()[0]


def detect_machine() -> Machine:
    cuda = torch.cuda.is_available()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    from ..cpu import usable_cores
    from .probe import measure_train_rates

    bf16, why = cpu_bf16()
    return Machine(cuda=cuda, cpu_bf16=bf16, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                   cores=usable_cores(), memory_bytes=memory, probe=measure_train_rates, bf16_note=why)


#: Smallest image side at which the online RepVGG form was measured faster than the standard one on a
#: CPU (1.17-1.27x at 32 px; at the digits' 8 px its per-block overhead left it no faster).
ONLINE_MIN_SIZE = 32


def _train_form(online: bool, gpu: bool, finetune: bool, budget_epochs: bool, size: int) -> tuple[str, str]:
    """The training form of a model that has the online form (RepVGG), and why: the online form where it
    was measured to win (docs/online.md)."""
    if not online:
        return "standard", "one form only"
    if not gpu and not finetune and budget_epochs and size >= ONLINE_MIN_SIZE:
        # CPU: 1.2-1.3x the standard form's images/s in a third of its activation memory, and at
        # equal time as accurate (potato, CIFAR-10 subset; docs/online.md)
        return "online", ("CPU, epochs from the time budget: one conv + one BN per block trains ~1.2x the "
                          "images of the three-branch form in the same time, keeping a third of the activations")
    why = ("GPU: at the recipe's bf16 step the online form was no faster on an H100" if gpu else
           "fine-tuning standard-form weights" if finetune else
           "fixed epochs: epoch for epoch the three-branch form was at least as accurate" if not budget_epochs else
           f"{size} px images: the online form is no faster below {ONLINE_MIN_SIZE} px")
    return "standard", f"RepVGG's three-branch form, as in the paper ({why})"


def _measured_choice(rates: dict, default, margin: float = 1.1):
    """The measured fastest option, but ``default`` unless another beats it by ``margin``: near-ties
    keep one answer, so the same command on the same machine trains the same way (layout and precision
    change the numerics)."""
    best = max(rates, key=rates.get)
    return best if default not in rates or rates[best] > rates[default] * margin else default


def _start_size(size: int) -> tuple[int, str]:
    """Progressive resizing's first size for a run trained at ``size`` px: 2/3 of it, not below 64 px
    (what was measured; fewer pixels leave a stride-32 network too little to see)."""
    start = min(size, max(64, int(round(size * 2 / 3 / 8)) * 8))
    return start, ("no progressive resizing" if start >= size else
                   f"progressive resizing: {start} px growing to {size} px by 75% of training")


class _Choices:
    """The automatic choices of one resolution, each logged with its reason (config.yaml records them)."""

    def __init__(self):
        self.notes: list[str] = []

    def pick(self, section, field: str, value, why: str):
        """``section`` with ``field`` set to ``value`` if it is ``auto`` (and the reason noted)."""
        if getattr(section, field) == AUTO:
            self.notes.append(f"{field}={value} ({why})")
            return replace(section, **{field: value})
        return section

    def drop(self, *fields: str) -> None:
        """Forget the notes of ``fields`` (a later decision replaces them)."""
        self.notes[:] = [n for n in self.notes if not n.startswith(tuple(f"{f}=" for f in fields))]


@dataclass(frozen=True)
class _Context:
    """What every section's resolver may look at besides its own section."""
    facts: DataFacts
    machine: Machine
    gpu: bool
    finetune: bool
    #: The preprocessing of the published weights being fine-tuned (``model.pretrained imagenet``).
    published: dict | None
    traits: FamilyTraits
    spent_seconds: float


def resolve(cfg: RunConfig, facts: DataFacts, machine: Machine,
            spent_seconds: float = 0.0) -> tuple[RunConfig, list[str]]:
    """Return the config with no ``auto`` left (every field of its concrete type: :func:`concrete`), and
    one line per automatic choice. One resolver per decision, in the order they depend on each other.

    ``spent_seconds``: how much of the command's time budget is already gone (reading the data).
    """
    c = _Choices()
    t, gpu = _device(cfg.train, machine, c)
    m = c.pick(cfg.model, "name", "repvgg_a0", "fast and accurate plain network; fuses to one 3x3 conv per layer")
    ctx = _Context(facts, machine, gpu, bool(m.pretrained), _published(m), traits_of(m.name), spent_seconds)
    d, m = _input_size(cfg.data, m, ctx, c)
    a = c.pick(cfg.augment, "preset", "crop", "random translation + horizontal flip")
    a = c.pick(a, "tta", "flips" if a.preset == "rot" else "hflip", "flip test-time augmentation")
    m = _structure(m, t, d, ctx, c)
    d = _loader(d, ctx, c)
    m, o = _optimizer(m, cfg.optim, d, ctx, c)
    t, rates, probe_seconds = _speed(t, m, d, ctx, c)
    t, d = _epochs(t, d, m, ctx, c, cfg.data, rates, probe_seconds)
    m, s = _warmup(m, cfg.schedule, t, ctx, c)
    t = c.pick(t, "ema", 0.0, "off")
    t = c.pick(t, "devices", 1, "one process")
    t = c.pick(t, "val_every", 1 if t.patience > 0 else 0, "early stopping counts epochs: validate every one"
               if t.patience > 0 else "0: measured in the first epoch; every epoch while a validation pass costs "
               "at most 10% of an epoch's training")
    return concrete(replace(cfg, data=d, augment=a, model=m, optim=o, schedule=s, train=t)), c.notes


def concrete(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every ``int | str``-style field converted to its number or bool type; an ``auto``
    left anywhere is a bug in the recipe. What leaves :func:`resolve` needs no cast downstream."""
    sections = {}
    for section in fields(cfg):
        values = getattr(cfg, section.name)
        hints = typing.get_type_hints(type(values))
        changes = {}
        for f in fields(values):
            value, kinds = getattr(values, f.name), typing.get_args(hints[f.name]) or (hints[f.name],)
            if value == AUTO and f.default == AUTO:
                raise RuntimeError(f"the recipe left {section.name}.{f.name} auto")
            kind = next((k for k in kinds if k is not str), str)
            if kind is not str and not isinstance(value, kind):
                changes[f.name] = kind(value)
        sections[section.name] = replace(values, **changes) if changes else values
    return replace(cfg, **sections)


def _device(t, machine: Machine, c: _Choices):
    gpu = machine.cuda and t.accelerator in (AUTO, "gpu", "cuda")
    t = c.pick(t, "accelerator", "gpu" if gpu else "cpu", "CUDA available" if gpu else "no GPU")
    if gpu:  # (a CPU's precision is chosen by _speed, measured once the model, size and batch are known)
        t = c.pick(t, "precision", "bf16" if machine.cuda_bf16 else "fp16", "mixed precision on the GPU")
    return t, gpu


def _published(m) -> dict | None:
    """The preprocessing of the published ImageNet weights ``model.pretrained imagenet`` fine-tunes."""
    if m.pretrained != "imagenet":
        return None
    from ..models.pretrained import pretrained_preprocess

    published = pretrained_preprocess(m.name)
    if published is None:
        raise ConfigError(f"model.pretrained imagenet: no published ImageNet weights for {m.name} "
                          "(plainnet models --pretrained lists those that have)")
    return published


def _input_size(d, m, ctx: _Context, c: _Choices):
    """Image size, the trunk's output stride, progressive resizing's start and the eval crop."""
    facts, published = ctx.facts, ctx.published
    small = facts.typical_side <= 64
    if small:
        # Tiny images are upsampled 2x (8 px digits -> 16) so 3x3 convs see more than a few pixels.
        side = facts.typical_side * 2 if facts.typical_side < 16 else facts.typical_side
        size = max(16, int(math.ceil(side / 8) * 8))
        why = f"images are ~{facts.typical_side} px"
    elif published and ctx.gpu:
        size, why = published["image_size"], "the pretrained weights' input size"
    else:
        size = 224 if ctx.gpu else 96
        why = "GPU" if ctx.gpu else "CPU budget: 96 px keeps ~99% of the accuracy at a fraction of 224 px cost"
        if published:
            why += f" (the weights were trained at {published['image_size']} px)"
    d = c.pick(d, "image_size", size, why)
    size = int(d.image_size)
    # The trunk's last feature map should stay >= 2x2: 16 px -> stride 8, 32 px -> 16, 64 px+ -> 32.
    stride = min(32, max(8, 2 ** int(math.log2(max(size // 2, 1)))))
    if published and ctx.traits.fixed_strides_when_pretrained:  # e.g. RepVGG's identity branches
        m = c.pick(m, "output_stride", 32, "as the pretrained network (its blocks' identity branches depend on it)")
    m = c.pick(m, "output_stride", stride, f"{size // stride}x{size // stride} final feature map")
    # Progressive resizing for photos on a CPU trained at 64 px or more (below, 2/3 of the side leaves
    # too few pixels for a stride-16/32 network).
    resize = _resizes(d, ctx)
    d = c.pick(d, "start_size", *_start_size(size) if resize else (size, "no progressive resizing"))
    if published and not small:
        d = c.pick(d, "crop_ratio", published["crop_ratio"], "as the pretrained weights were evaluated")
    d = c.pick(d, "crop_ratio", 1.0 if small else 0.875, "no border to crop on tiny images" if small else "standard")
    return d, m


def _resizes(d, ctx: _Context) -> bool:
    """Whether photos train with progressive resizing here (on a CPU, at 64 px or more)."""
    return not (ctx.facts.typical_side <= 64 or ctx.gpu) and int(d.image_size) >= 64


def _structure(m, t, d, ctx: _Context, c: _Choices):
    """The training form and the dropout."""
    traits = ctx.traits
    if m.train_form not in (AUTO, *traits.train_forms):
        raise ConfigError(f"model.train_form {m.train_form}: {m.name} trains in the "
                          f"{' or '.join(traits.train_forms)} form only")
    online = "online" in traits.train_forms
    m = c.pick(m, "train_form", *_train_form(online, ctx.gpu, ctx.finetune, t.epochs == AUTO, int(d.image_size)))
    return c.pick(m, "drop_rate", traits.drop_rate, f"the {traits.family} family's dropout" if traits.drop_rate
                  else "not needed with BN and augmentation")


def _loader(d, ctx: _Context, c: _Choices):
    """Class balance, batch size, caching and workers."""
    facts, machine = ctx.facts, ctx.machine
    counts = [n for n in facts.class_counts if n > 0]
    ratio = max(counts) / max(min(counts), 1) if counts else 1.0
    d = c.pick(d, "balance", "loss" if ratio > 2 else "none",
               f"largest/smallest class = {ratio:.1f}" + (": class-weighted loss" if ratio > 2 else ""))
    batch = 128 if ctx.gpu else 64
    # Small datasets: at least ~8 steps per epoch, so the schedule and BN statistics have steps to use.
    batch = max(8, min(batch, 2 ** int(math.log2(max(facts.num_train // 8, 1)))))
    d = c.pick(d, "batch_size", batch, "fits memory, keeps BN statistics stable")
    side = round(int(d.image_size) / float(d.crop_ratio))
    cached = facts.num_train * 1.25 * side * side * 3
    fits = cached < min(machine.memory_bytes * 0.25, 16 << 30)
    d = c.pick(d, "cache", "memory" if fits else "stream",
               f"decoded images need {cached / 2**20:.0f} MiB" + ("" if fits else ", too much for memory"))
    return c.pick(d, "workers", 0 if d.cache == "memory" else min(8, machine.cores), "augmentation runs batched")


def _optimizer(m, o, d, ctx: _Context, c: _Choices):
    """The learning rate, and the pretrained backbone's share of it."""
    finetune, plain_vgg = ctx.finetune, not ctx.traits.batch_norm
    fc_vgg = ctx.traits.fc_head and m.head != "gap"
    m = c.pick(m, "backbone_lr_scale", 0.1 if finetune else 1.0, "fine-tuning: the pretrained backbone learns at "
               "0.1x the new head's rate" if finetune else "training from scratch: one rate")
    base_lr = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}.get(o.name, 0.1)
    if plain_vgg or fc_vgg:
        # No BN, or 4096-wide fully connected layers without BN: at 0.1 these diverge (measured: vgg11_bn
        # on potato reached NaN in epoch 2); 0.01 is the VGG paper's rate.
        base_lr *= 0.1
    if finetune:
        base_lr *= 0.1
    online_sgd = m.train_form == "online" and o.name == "sgd"
    if online_sgd:
        # One BN per block instead of one per branch: at 0.1 the online form trained unstably (digits,
        # A0, 3 epochs, seeds 0/1: 44%/39%; at 0.05: 91%/86%; the standard form at 0.1: 86%/77%).
        base_lr *= 0.5
    base_lr *= int(d.batch_size) / 64 if o.name == "sgd" else 1.0
    why = "plain VGG without BN needs a lower rate; " if plain_vgg else (
        "VGG's fully connected head needs a lower rate; " if fc_vgg else
        "the online RepVGG form (one BN per block) needs half the rate; " if online_sgd else "")
    o = c.pick(o, "lr", round(base_lr, 6), why + ("fine-tuning; " if finetune else "") + f"{o.name} at batch "
               f"{d.batch_size}")
    return m, o


def _speed(t, m, d, ctx: _Context, c: _Choices):
    """Precision and memory layout on a CPU, from the probe's measured training rates (or the CPU's
    flags). Returns the train section, the rates by (precision, channels_last) and the probe's seconds."""
    machine, traits = ctx.machine, ctx.traits
    rates, probe_seconds = {}, 0.0
    if not ctx.gpu and machine.probe is not None and AUTO in (t.precision, t.epochs, t.channels_last):
        # Only what can win is timed: emulated bf16 (no native bf16 in this process) is several times
        # slower than fp32, and timing it took most of a short budget (measured: a minute on a 2-core Zen 3).
        precisions = (("fp32", "bf16") if machine.cpu_bf16 else ("fp32",)) if t.precision == AUTO else (t.precision,)
        layouts = (True, False) if t.channels_last == AUTO else (bool(t.channels_last),)
        stride = None if traits.foreign else int(m.output_stride)
        probe_started = time.perf_counter()
        try:
            form = {"train_form": m.train_form} if m.train_form == "online" else {}  # the form that trains
            rates = machine.probe(m.name, stride, int(d.image_size), ctx.facts.num_classes, int(d.batch_size),
                                  precisions, layouts, **form)
        except Exception as e:  # noqa: BLE001 - a model the probe cannot build: fall back to the estimate
            log.warning("could not measure training speed (%s); estimating it instead", e)
        probe_seconds = time.perf_counter() - probe_started
    if rates:
        best = {p: max(r for (q, _), r in rates.items() if q == p) for p in dict.fromkeys(q for q, _ in rates)}
        t = c.pick(t, "precision", _measured_choice(best, "bf16" if machine.cpu_bf16 else "fp32"), "measured " +
                   ", ".join(f"{p} {r:.0f} img/s" for p, r in best.items()) +
                   ("" if machine.cpu_bf16 else f"; bf16 not timed: {machine.bf16_note}"))
        layout = {cl: r for (p, cl), r in rates.items() if p == t.precision}
        t = c.pick(t, "channels_last", _measured_choice(layout, True), "measured " + ", ".join(
            f"{'channels_last' if cl else 'contiguous'} {r:.0f} img/s" for cl, r in layout.items()))
    if not ctx.gpu:  # nothing measured: the CPU's flags decide
        t = c.pick(t, "precision", "bf16" if machine.cpu_bf16 else "fp32",
                   "CPU has native bf16" if machine.cpu_bf16 else machine.bf16_note)
    return c.pick(t, "channels_last", True, "faster convolutions with oneDNN and cuDNN"), rates, probe_seconds


def _epochs(t, d, m, ctx: _Context, c: _Choices, asked, rates: dict, probe_seconds: float):
    """The floor, then the epochs: a GPU default, or what fits the CPU time budget at the measured rate
    (trained smaller when too few fit at the automatic size). ``asked``: the data section as given."""
    steps = max(ctx.facts.num_train // int(d.batch_size), 1)  # optimizer steps per epoch
    floor = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(FLOOR_STEPS / steps)))
    if ctx.finetune:
        floor = min(floor, FINETUNE_MAX_EPOCHS)
    t = c.pick(t, "min_epochs", floor, f"the floor: at least {FLOOR_STEPS} optimizer steps ({steps} an epoch) and "
               f"{MIN_EPOCHS} epochs, so that a short budget still learns")
    if t.epochs != AUTO:
        return t, d
    if ctx.gpu:
        epochs, why = 30, "GPU default"
        if ctx.finetune:
            epochs, why = FINETUNE_MAX_EPOCHS, f"fine-tuning on a GPU: {FINETUNE_MAX_EPOCHS} epochs"
        return c.pick(t, "epochs", epochs, why), d
    rate = rates.get((t.precision, bool(t.channels_last))) or _cpu_train_rate(
        m, int(d.image_size), ctx.facts.num_classes, t.precision == "bf16", ctx.machine.cores)
    # What is left of the whole command's budget for training: the data scan and the probe are spent;
    # ~5% stays for validation, the final scoring and the report (re-fitted while training).
    seconds = max(float(t.budget_minutes) * 60 * (1 - RESERVE_SHARE) - ctx.spent_seconds - probe_seconds, 0.0)
    budget = _Budget(seconds, rate, ctx.facts.num_train, int(d.image_size))
    if asked.image_size == AUTO and _resizes(d, ctx):
        d = _budget_size(d, m, budget, c, start_auto=asked.start_size == AUTO)
    return c.pick(t, "epochs", *_budget_epochs(t, d, ctx, budget, bool(rates), probe_seconds)), d


@dataclass(frozen=True)
class _Budget:
    """Training seconds left in the budget, the training rate (images/s) at ``measured_at`` px."""
    seconds: float
    rate: float
    num_train: int
    measured_at: int

    def fit(self, start: int, full: int) -> float:
        """Epochs that fit, training from ``start`` to ``full`` px."""
        return self.seconds * self.rate / max(self.num_train, 1) / mean_cost(start, full, self.measured_at)


def _budget_size(d, m, budget: _Budget, c: _Choices, *, start_auto: bool):
    """A lower resolution, 8 px at a time down to MIN_BUDGET_SIZE, while fewer than ENOUGH_EPOCHS fit."""
    full, start = budget.measured_at, int(d.start_size)
    if budget.fit(start, full) >= ENOUGH_EPOCHS:
        return d
    while full > MIN_BUDGET_SIZE and budget.fit(start, full) < ENOUGH_EPOCHS:
        full -= 8
        start = _start_size(full)[0] if start_auto else min(start, full)
    final = full // int(m.output_stride)
    c.notes[:] = [f"output_stride={m.output_stride} ({final}x{final} final feature map)"
                  if n.startswith("output_stride=") else n for n in c.notes]
    c.drop("image_size", "start_size")
    c.notes.append(f"image_size={full} ({budget.fit(int(d.start_size), budget.measured_at):.1f} epochs fit the "
                   f"budget at {budget.measured_at} px, {budget.fit(start, full):.1f} at {full} px: fewer than "
                   f"{ENOUGH_EPOCHS} fit, so a lower resolution)")
    if start_auto:
        c.notes.append("start_size={} ({})".format(*_start_size(full)))
    return replace(d, image_size=full, start_size=start)


def _budget_epochs(t, d, ctx: _Context, budget: _Budget, measured: bool, probe_seconds: float) -> tuple[int, str]:
    """The epochs that fit the budget (at least the floor; fine-tuning capped), and why."""
    start, full = int(d.start_size), int(d.image_size)
    cost, fits = mean_cost(start, full, budget.measured_at), budget.fit(start, full)
    epochs = int(min(MAX_EPOCHS, max(int(t.min_epochs), fits)))
    capped = ctx.finetune and epochs > FINETUNE_MAX_EPOCHS
    epochs = min(epochs, FINETUNE_MAX_EPOCHS) if capped else epochs
    why = (f"{t.budget_minutes:g} min budget: {budget.seconds:.0f} s of training at ~{budget.rate:.0f} img/s "
           f"({'measured' if measured else 'estimated'} at {budget.measured_at} px) for {ctx.facts.num_train} images")
    if cost < 1:
        why += f", {cost:.2f}x that cost per epoch at the sizes trained"
    if fits < int(t.min_epochs):  # the floor does not fit: said up front, with the time it takes
        why += f": {fits:.1f} epochs fit, fewer than the floor of {t.min_epochs}, which is kept"
        need = int(t.min_epochs) * max(ctx.facts.num_train, 1) * cost / budget.rate
        total = (ctx.spent_seconds + probe_seconds + need) / (1 - RESERVE_SHARE)
        log.warning("budget: %g min is too short to learn here: the floor of %d epochs needs ~%.0f s of "
                    "training at ~%.0f img/s, so this command takes ~%.1f min; give --train.budget_minutes "
                    "%.1f or more to plan within the budget (or --epochs N)", float(t.budget_minutes),
                    int(t.min_epochs), need, budget.rate, total / 60, math.ceil(total / 6) / 10)
    if capped:
        why += f"; fine-tuning: at most {FINETUNE_MAX_EPOCHS} epochs, the rest of the budget unused"
    return epochs, why


def _warmup(m, s, t, ctx: _Context, c: _Choices):
    """Fine-tuning's head-only epochs, and the learning-rate warm-up."""
    finetune = ctx.finetune
    head_first = finetune and int(t.epochs) >= 4  # one epoch of the head alone costs at most a quarter
    m = c.pick(m, "freeze_epochs", 1 if head_first else 0, "fine-tuning: the new head learns alone for the first "
               "epoch, so its random start does not disturb the pretrained features" if head_first else
               "fine-tuning in fewer than 4 epochs: every layer from the start" if finetune else
               "training from scratch")
    if finetune:  # after the head-only epochs, a short ramp: the pretrained weights need no long warm-up
        warm, why = float(m.freeze_epochs) + 0.5, "fine-tuning: short warm-up after the head-only epochs"
    else:
        warm = (0.25 if s.name == "onecycle" else 0.05) * int(t.epochs)
        warm, why = max(2.0 if not ctx.traits.batch_norm else 0.0, round(warm, 2)), "gradual start"
    return m, c.pick(s, "warmup_epochs", round(min(warm, int(t.epochs) / 2), 2), why)
