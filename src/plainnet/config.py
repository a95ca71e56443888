"""Training configuration: frozen dataclasses, YAML files and dotted command-line overrides.

Precedence: dataclass defaults < YAML file < ``--section.key value`` overrides. Unknown keys are rejected
with a close-match hint; values are parsed with ``yaml.safe_load`` and checked against the field's type,
never ``eval``-ed. ``"auto"`` values are resolved by :mod:`plainnet.engine.recipe` from the data and the
machine, and the resolved config is what a run directory records.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import atomic_write_text

__all__ = [
    "DataConfig",
    "AugmentConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "DistillConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
]

AUTO = "auto"


@dataclass(frozen=True)
class DataConfig:
    #: A folder of class sub-folders, ``train/`` + ``val/`` folders, CIFAR-10 python batches, or ``digits``.
    path: str = ""
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    #: Training and evaluation resolution (square); ``auto`` picks from image size and hardware.
    image_size: int | str = AUTO
    #: Eval: resize the shorter side to ``image_size / crop_ratio``, then center-crop ``image_size``.
    crop_ratio: float | str = AUTO
    #: Progressive resizing: training starts at this side and grows to ``image_size`` by 75% of
    #: training (``image_size`` or more: off); ``auto`` starts at 2/3 of it for photos on a CPU.
    start_size: int | str = AUTO
    #: ``memory`` (decode once into a memory-mapped uint8 cache), ``stream`` (DataLoader workers), or auto.
    cache: str = AUTO
    cache_dir: str = ""
    #: ``imagenet`` statistics, or ``data`` (computed from the training images).
    normalize: str = "imagenet"
    batch_size: int | str = AUTO
    workers: int | str = AUTO
    #: Imbalanced classes: ``none``, ``loss`` (class-weighted cross-entropy) or ``sampler``.
    balance: str = AUTO


@dataclass(frozen=True)
class AugmentConfig:
    #: ``none``, ``shift`` (translate only: digits, text), ``crop`` (translate + h-flip), ``rot`` (crop + h/v-flips + 90-degree rotations, for
    #: top-down images such as leaves, cells, aerial), ``rrc`` (RandomResizedCrop + h-flip),
    #: ``vgg`` (scale jittering: square crops of random size + h-flip), or auto.
    preset: str = AUTO
    #: Random rotation by up to this many degrees, on top of the preset.
    rotate: float = 0.0
    #: Extra per-image policy: ``none``, ``trivial`` (TrivialAugmentWide) or ``randaugment``.
    policy: str = "none"
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0
    #: Evaluation-time augmentation of the final evaluation: ``none``, ``hflip``, ``flips`` (h+v).
    tta: str = AUTO


@dataclass(frozen=True)
class ModelConfig:
    #: A plainnet model (``plainnet models``), ``torchvision.NAME`` or ``timm.NAME``.
    name: str = AUTO
    #: Fine-tune from ``imagenet`` (the published weights of ``name``, downloaded and cached: see
    #: ``plainnet models --pretrained``) or from a local checkpoint (any dialect); the head is replaced
    #: for the class count.
    pretrained: str = ""
    #: Total downsampling of plainnet models: 32 (photos), 16 or 8 (small images keep spatial detail).
    output_stride: int | str = AUTO
    drop_rate: float | str = AUTO
    #: VGG head: classic, slim or gap.
    head: str = ""
    #: RepVGG's training structure: ``standard`` (three branches with their BatchNorms) or ``online``
    #: (merged into one 3x3 conv every step; fuses to the same network). Other models: standard.
    train_form: str = AUTO
    #: Freeze the stem and the first N stages (fine-tuning).
    freeze_stages: int = 0
    #: Train only the head for the first N epochs, then everything (fine-tuning); auto: 1 when pretrained.
    freeze_epochs: int | str = AUTO
    #: Learning-rate factor for the pretrained backbone (the head gets the full rate); auto: 0.1 when
    #: pretrained, else 1.
    backbone_lr_scale: float | str = AUTO


@dataclass(frozen=True)
class OptimConfig:
    #: ``sgd`` (momentum, optional nesterov), ``adam`` or ``adamw``.
    name: str = "sgd"
    lr: float | str = AUTO
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    #: No weight decay on BatchNorm parameters and biases.
    no_decay_norm_bias: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    #: ``onecycle``, ``cosine`` (linear warm-up then cosine) or ``constant``.
    name: str = "onecycle"
    warmup_epochs: float | str = AUTO
    #: Final learning rate as a fraction of the peak.
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class DistillConfig:
    #: A plainnet checkpoint (``best.pt``, a run directory) of the teacher, or ``NAME:imagenet`` (NAME
    #: fine-tuned from its published ImageNet weights on the same data first); empty: no distillation.
    teacher: str = ""
    #: Softening temperature. 2 rather than Hinton's 4: plainnet's teachers are trained with label
    #: smoothing, which already flattens their outputs (Mueller et al. 2019, arXiv:1906.02629). Measured
    #: (benchmarks/distill.py, 3 seeds): T=2 from a label-smoothed teacher lifted a half-width A0 student
    #: 7.8 points (every seed); T=4 from a teacher without smoothing, 0.9 (within noise).
    temperature: float = 2.0
    #: Weight of the KL term; ``1 - alpha`` goes to cross-entropy with the labels.
    alpha: float = 0.7


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | str = AUTO
    #: On a CPU, ``epochs: auto`` fits the whole command (data, speed probe, training, validation, final
    #: scoring) into this many minutes: epochs planned from a measured training rate, re-fitted after
    #: every epoch to the time left.
    budget_minutes: float = 5.0
    #: The floor: the fewest epochs a run plans, which a budget re-fit never cuts (when even they do not
    #: fit the budget, the run says so up front and takes the time they need); ``auto``: enough optimizer
    #: steps to learn (:data:`plainnet.engine.recipe.FLOOR_STEPS`), at least 3 epochs.
    min_epochs: int | str = AUTO
    #: Stop once the validation accuracy reaches this (0..1; 0: off), the budget or ``epochs`` as a cap.
    target_acc: float = 0.0
    label_smoothing: float = 0.1
    #: EMA decay of the weights (0 disables); validation and exports then use the averaged weights.
    ema: float | str = AUTO
    grad_clip: float = 0.0
    #: Validate every this many epochs and after the last; ``0``: every epoch while a validation pass
    #: costs <= 10% of an epoch's training (measured in the first epoch), else as rarely as keeps it so
    #: (at most every 5th); ``auto``: 0, or every epoch when early stopping is on.
    val_every: int | str = AUTO
    #: Stop when ``monitor`` has not improved for this many validations -- epochs, unless ``val_every`` is
    #: set above 1 (0 disables).
    patience: int = 0
    monitor: str = "val/acc"
    #: ``auto`` (bf16 where the CPU or GPU supports it, else fp32), ``bf16``, ``fp16``, ``fp32``.
    precision: str = AUTO
    channels_last: bool | str = AUTO
    compile: bool = False
    #: ``auto`` (cpu, or the GPUs), ``cpu``, ``gpu``.
    accelerator: str = AUTO
    #: Processes per node (DDP when > 1); under ``torchrun`` taken from its environment.
    devices: int | str = AUTO
    num_nodes: int = 1
    seed: int = 0
    threads: int = 0
    #: Parent of run directories and the run's name (default: model name and a timestamp).
    runs_dir: str = "runs"
    name: str = ""
    progress: bool = True


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def _auto_keys() -> set[str]:
    keys = set()
    for section in fields(RunConfig):
        for f in fields(section.default_factory):
            if f.default == AUTO:
                keys.add(f"{section.name}.{f.name}")
    return keys


_AUTO_KEYS = _auto_keys()


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _hint(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(options))}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert one parsed value against a field annotation (``int | str`` etc.)."""
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if hints == (str,) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. --train.name 2024
    for hint in hints:
        if hint is bool and isinstance(value, bool):
            return value
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if hint is str and isinstance(value, str):
            if str in hints and len(hints) > 1 and value != AUTO:
                continue  # "int | str" admits only the word "auto" as a string
            return value
    if str in hints and value == AUTO:
        return value
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; numbers are still numbers
        for hint, parse in ((int, int), (float, float)):
            if hint in hints:
                try:
                    return parse(value)
                except ValueError:
                    pass
    names = " or ".join("auto" if h is str and len(hints) > 1 else h.__name__ for h in hints)
    raise ConfigError(f"{key}: expected {names}, got {value!r}")


#: Allowed values of the fields that take one of a few words (``auto`` is accepted where it is the default).
CHOICES = {
    "data.cache": ("memory", "stream"),
    "data.normalize": ("imagenet", "data"),
    "data.balance": ("none", "loss", "sampler"),
    "augment.preset": ("none", "shift", "crop", "rot", "rrc", "vgg"),
    "augment.policy": ("none", "trivial", "randaugment"),
    "augment.tta": ("none", "hflip", "flips"),
    "model.head": ("", "classic", "slim", "gap"),
    "model.train_form": ("standard", "online"),
    "optim.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("onecycle", "cosine", "constant"),
    "train.precision": ("bf16", "fp16", "fp32"),
    "train.accelerator": ("cpu", "gpu"),
}


#: Allowed ranges of the numeric fields, as intervals ``(low, high, low_open, high_open)``; ``None``
#: is unbounded. NaN and infinities are never allowed; ``auto`` stays allowed where it is the default.
RANGES = {
    "data.val_fraction": (0.0, 1.0, True, True),
    "data.test_fraction": (0.0, 1.0, False, True),
    "data.seed": (0, None, False, False),
    "data.image_size": (8, 4096, False, False),
    "data.start_size": (8, 4096, False, False),
    "data.crop_ratio": (0.0, 1.0, True, False),
    "data.batch_size": (1, None, False, False),
    "data.workers": (0, None, False, False),
    "augment.rotate": (0.0, 180.0, False, False),
    "augment.mixup": (0.0, None, False, False),
    "augment.cutmix": (0.0, None, False, False),
    "augment.random_erasing": (0.0, 1.0, False, False),
    "model.drop_rate": (0.0, 1.0, False, True),
    "model.freeze_stages": (0, 5, False, False),
    "model.freeze_epochs": (0, None, False, False),
    "model.backbone_lr_scale": (0.0, None, False, False),
    "optim.lr": (0.0, None, True, False),
    "optim.momentum": (0.0, 1.0, False, True),
    "optim.weight_decay": (0.0, None, False, False),
    "schedule.warmup_epochs": (0.0, None, False, False),
    "schedule.min_lr_ratio": (0.0, 1.0, False, False),
    "train.epochs": (1, None, False, False),
    "train.budget_minutes": (0.0, None, True, False),
    "train.min_epochs": (1, None, False, False),
    "train.target_acc": (0.0, 1.0, False, False),
    "train.label_smoothing": (0.0, 1.0, False, True),
    "train.ema": (0.0, 1.0, False, True),
    "train.grad_clip": (0.0, None, False, False),
    "train.patience": (0, None, False, False),
    "train.val_every": (0, None, False, False),
    "train.devices": (1, None, False, False),
    "train.num_nodes": (1, None, False, False),
    "train.threads": (0, None, False, False),
    "distill.temperature": (0.0, None, True, False),
    "distill.alpha": (0.0, 1.0, False, False),
}
#: Fields that take one of a few numbers.
NUMBER_CHOICES = {"model.output_stride": (8, 16, 32)}


def _describe_range(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _check_range(key: str, value) -> None:
    if value == AUTO or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    auto = " or auto" if key in _AUTO_KEYS else ""
    if key in NUMBER_CHOICES and value not in NUMBER_CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not allowed (one of {', '.join(map(str, NUMBER_CHOICES[key]))}{auto})")
    if key not in RANGES:
        return
    low, high, low_open, high_open = RANGES[key]
    inside = math.isfinite(value) and (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high))
    if not inside:
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {_describe_range(*RANGES[key])}{auto})")


def check_config(cfg: "RunConfig") -> "RunConfig":
    """Checks that span fields (one field's range is checked as it is set)."""
    d = cfg.data
    if isinstance(d.val_fraction, float) and d.val_fraction + d.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction:g}: "
                          "nothing would be left to train on (their sum must be below 1)")
    return cfg


def _check_choice(key: str, value) -> None:
    allowed = CHOICES.get(key)
    if allowed and value != AUTO and value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(a for a in allowed if a)}"
                          f"{_hint(str(value), [a for a in allowed if a]) if isinstance(value, str) else ''}")


def _update_section(section, values: dict, prefix: str):
    known = {f.name: f for f in fields(section)}
    hints = typing.get_type_hints(type(section))
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown option '{prefix}.{key}'{_hint(key, known)}")
        changes[key] = _coerce(value, hints[key], f"{prefix}.{key}")
        _check_choice(f"{prefix}.{key}", changes[key])
        _check_range(f"{prefix}.{key}", changes[key])
    return replace(section, **changes)


def config_from_dict(d: dict, base: RunConfig | None = None) -> RunConfig:
    """A :class:`RunConfig` from nested ``{section: {key: value}}``, on top of ``base`` (defaults)."""
    cfg = base or RunConfig()
    sections = {f.name for f in fields(RunConfig)}
    for name, values in (d or {}).items():
        if name not in sections:
            raise ConfigError(f"unknown config section '{name}'{_hint(name, sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{name}' must be a mapping, got {values!r}")
        cfg = replace(cfg, **{name: _update_section(getattr(cfg, name), values, name)})
    return check_config(cfg)


def load_config(path: str | Path | None, base: RunConfig | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (if any)."""
    if not path:
        return base or RunConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return config_from_dict(data, base)


def apply_overrides(cfg: RunConfig, overrides: dict[str, str] | list[str]) -> RunConfig:
    """Apply ``{"optim.lr": "3e-4"}`` (or ``["--optim.lr", "3e-4", "--train.epochs=5"]``) overrides."""
    if isinstance(overrides, list):
        overrides = parse_override_args(overrides)
    nested: dict[str, dict] = {}
    for dotted, raw in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override '{dotted}' must look like section.key (e.g. optim.lr)")
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        if value is None:
            value = ""
        nested.setdefault(section, {})[key] = value
    return config_from_dict(nested, cfg)


def parse_override_args(args: list[str]) -> dict[str, str]:
    """``["--optim.lr", "3e-4", "--train.epochs=5"]`` -> ``{"optim.lr": "3e-4", "train.epochs": "5"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"unexpected argument '{arg}': overrides look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override '{arg}' needs a value")
            value = args[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def save_config(cfg: RunConfig, path: str | Path, notes: list[str] | tuple[str, ...] = ()) -> None:
    """Write ``cfg`` as YAML, headed by ``notes`` (why each automatic value was chosen) as comments."""
    header = "".join(f"# auto: {' '.join(n.split())}\n" for n in notes)
    atomic_write_text(path, header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
