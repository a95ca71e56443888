"""Config precedence (defaults < YAML < dotted overrides), validation, and the automatic recipe."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from plainnet.config import RunConfig, apply_overrides, load_config, parse_override_args
from plainnet.engine.recipe import DataFacts, Machine, resolve
from plainnet.errors import ConfigError

CPU = Machine(cuda=False, cpu_bf16=True, cuda_bf16=False, cores=2, memory_bytes=24 << 30)
GPU = Machine(cuda=True, cpu_bf16=True, cuda_bf16=True, cores=16, memory_bytes=128 << 30)


def test_precedence_defaults_file_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim:\n  lr: 0.05\n  name: adamw\ntrain:\n  epochs: 12\n")
    cfg = load_config(recipe)
    assert cfg.optim.lr == 0.05 and cfg.optim.name == "adamw" and cfg.train.epochs == 12
    assert cfg.optim.momentum == RunConfig().optim.momentum  # untouched default
    cfg = apply_overrides(cfg, ["--optim.lr", "3e-4", "--train.epochs=5", "--augment.preset", "rot"])
    assert cfg.optim.lr == 3e-4 and cfg.train.epochs == 5 and cfg.augment.preset == "rot"
    assert cfg.optim.name == "adamw"


def test_unknown_keys_get_close_match_hints(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'optim.momentun'.*did you mean 'momentum'"):
        apply_overrides(RunConfig(), {"optim.momentun": "0.8"})
    with pytest.raises(ConfigError, match="unknown option 'optim.zzz'; known: lr, momentum"):
        apply_overrides(RunConfig(), {"optim.zzz": "1"})
    with pytest.raises(ConfigError, match="unknown config section 'optimizer'.*did you mean 'optim'"):
        apply_overrides(RunConfig(), {"optimizer.lr": "1"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(bad)


def test_values_are_parsed_not_evaluated():
    with pytest.raises(ConfigError, match="optim.lr: expected float or auto"):
        apply_overrides(RunConfig(), {"optim.lr": "__import__('os').system('true')"})
    with pytest.raises(ConfigError, match="train.epochs: expected int or auto"):
        apply_overrides(RunConfig(), {"train.epochs": "ten"})
    assert apply_overrides(RunConfig(), {"train.name": "2024"}).train.name == "2024"
    assert apply_overrides(RunConfig(), {"train.compile": "true"}).train.compile is True


def test_override_args_need_values():
    assert parse_override_args(["--a.b", "1", "--c.d=x"]) == {"a.b": "1", "c.d": "x"}
    with pytest.raises(ConfigError, match="needs a value"):
        parse_override_args(["--a.b"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_override_args(["lr=3"])


def test_auto_recipe_for_photos_on_cpu_and_gpu():
    facts = DataFacts(num_train=1722, num_classes=3, class_counts=(800, 800, 122), typical_side=256)
    cfg, notes = resolve(RunConfig(), facts, CPU)
    # every choice explicit; the validation interval 0: the first epoch measures it (TrainingClock)
    assert cfg.train.val_every == 0 and "auto" not in str(cfg)
    assert any(n.startswith("val_every=0") for n in notes)
    assert cfg.model.name == "repvgg_a0" and cfg.data.image_size == 96 and cfg.model.output_stride == 32
    assert cfg.train.precision == "bf16" and cfg.train.channels_last is True
    assert cfg.data.balance == "loss"  # healthy is 7% of the potato leaves
    assert cfg.data.cache == "memory" and 10 <= cfg.train.epochs <= 60
    assert any(n.startswith("image_size=96") for n in notes)
    gpu_cfg, _ = resolve(RunConfig(), facts, GPU)
    assert gpu_cfg.data.image_size == 224 and gpu_cfg.train.accelerator == "gpu"
    no_bf16, _ = resolve(RunConfig(), facts, Machine(False, False, False, 2, 8 << 30))
    assert no_bf16.train.precision == "fp32"


def test_auto_recipe_for_small_images_and_plain_vgg():
    digits = DataFacts(num_train=1438, num_classes=10, class_counts=(144,) * 10, typical_side=8)
    cfg, _ = resolve(RunConfig(), digits, CPU)
    assert cfg.data.image_size == 16 and cfg.model.output_stride == 8 and cfg.data.crop_ratio == 1.0
    assert cfg.data.balance == "none"
    vgg, notes = resolve(apply_overrides(RunConfig(), {"model.name": "vgg16"}), digits, CPU)
    assert vgg.optim.lr == pytest.approx(0.01) and vgg.schedule.warmup_epochs >= 2
    assert vgg.model.drop_rate == 0.5
    # BN but 4096-wide fully connected layers: 0.1 diverged on potato, so 0.01; a GAP head keeps 0.1
    bn_fc, _ = resolve(apply_overrides(RunConfig(), {"model.name": "vgg11_bn"}), digits, CPU)
    bn_gap, _ = resolve(apply_overrides(RunConfig(), {"model.name": "vgg11_bn", "model.head": "gap"}), digits, CPU)
    assert bn_fc.optim.lr == pytest.approx(0.01) and bn_gap.optim.lr == pytest.approx(0.1)
    # RepVGG's online form (one BN per block) trained unstably at SGD's 0.1: half, and the log says why
    repvgg = {"model.name": "repvgg_a0", "model.train_form": "online"}
    online, notes = resolve(apply_overrides(RunConfig(), repvgg), digits, CPU)
    standard, _ = resolve(apply_overrides(RunConfig(), {**repvgg, "model.train_form": "standard"}), digits, CPU)
    assert online.optim.lr == pytest.approx(standard.optim.lr / 2)
    assert any(n.startswith("lr=") and "online RepVGG form" in n for n in notes), notes
    adam, _ = resolve(apply_overrides(RunConfig(), {**repvgg, "optim.name": "adamw"}), digits, CPU)
    assert adam.optim.lr == pytest.approx(1e-3)
    explicit = apply_overrides(RunConfig(), {"data.image_size": "48", "optim.lr": "0.2"})
    kept, _ = resolve(explicit, digits, CPU)
    assert kept.data.image_size == 48 and kept.optim.lr == 0.2  # explicit values are never replaced


def test_word_options_are_checked():
    with pytest.raises(ConfigError, match="augment.preset: 'rotate' is not one of .*did you mean 'rot'"):
        apply_overrides(RunConfig(), {"augment.preset": "rotate"})
    with pytest.raises(ConfigError, match="optim.name: 'lamb' is not one of sgd, adam, adamw"):
        apply_overrides(RunConfig(), {"optim.name": "lamb"})


PHOTOS = DataFacts(num_train=1500, num_classes=3, class_counts=(500, 500, 500), typical_side=256)


def test_a_measured_machine_picks_the_faster_precision_and_layout_and_fits_epochs_to_the_budget():
    calls = []

    def probe(name, stride, size, classes, batch, precisions, layouts, **form):  # an AVX2 CPU: bf16 emulated, slow
        calls.append((name, size, classes, precisions, layouts))
        rates = {("fp32", True): 50.0, ("fp32", False): 60.0, ("bf16", True): 9.0, ("bf16", False): 8.0}
        return {(p, cl): r for (p, cl), r in rates.items() if p in precisions and cl in layouts}

    avx2 = Machine(cuda=False, cpu_bf16=False, cuda_bf16=False, cores=2, memory_bytes=24 << 30, probe=probe,
                   bf16_note="no native bf16: the CPU has no AVX-512 BF16 or AMX")
    cfg, notes = resolve(RunConfig(), PHOTOS, avx2, spent_seconds=30)
    # emulated bf16 cannot win: only fp32 is timed (the probe's bf16 figure here would never be asked for)
    assert calls == [("repvgg_a0", cfg.data.image_size, 3, ("fp32",), (True, False))]
    assert cfg.train.precision == "fp32" and cfg.train.channels_last is False
    assert ("precision=fp32 (measured fp32 60 img/s; bf16 not timed: no native bf16: the CPU has no AVX-512 BF16 "
            "or AMX)") in notes
    assert "channels_last=False (measured channels_last 50 img/s, contiguous 60 img/s)" in notes
    # 5 minutes less 5% for scoring and the 30 s already spent, at 60 img/s, with epochs that cost
    # (64/96)^2..1 of a full-size one while the images grow: between the all-96 and all-64 px counts
    seconds = 5 * 60 * 0.95 - 30
    assert cfg.data.start_size == 64 and cfg.data.image_size == 96
    assert int(seconds * 60 / 1500) < cfg.train.epochs < int(seconds * 60 / 1500 / (64 / 96) ** 2)
    assert any("255 s of training at ~60 img/s (measured at 96 px)" in n for n in notes)
    near_tie = Machine(cuda=False, cpu_bf16=True, cuda_bf16=False, cores=2, memory_bytes=24 << 30,
                       probe=lambda *a, **k: {("fp32", True): 100.0, ("fp32", False): 103.0, ("bf16", True): 95.0,
                                         ("bf16", False): 90.0})
    tie, _ = resolve(RunConfig(), PHOTOS, near_tie)  # within 10%: the defaults, so runs stay reproducible
    assert tie.train.precision == "bf16" and tie.train.channels_last is True
    later, _ = resolve(RunConfig(), PHOTOS, avx2, spent_seconds=120)
    assert later.train.epochs < cfg.train.epochs  # less of the budget left, fewer epochs
    fixed, _ = resolve(apply_overrides(RunConfig(), {"train.precision": "bf16", "train.epochs": "3",
                                                     "train.channels_last": "true"}), PHOTOS, avx2)
    assert fixed.train.precision == "bf16" and len(calls) == 2  # nothing left to measure: no probe


def test_a_budget_too_short_for_enough_epochs_trains_at_a_lower_resolution():
    from plainnet.engine.recipe import ENOUGH_EPOCHS, MIN_BUDGET_SIZE
    from plainnet.engine.schedule import mean_cost

    slow = Machine(cuda=False, cpu_bf16=False, cuda_bf16=False, cores=2, memory_bytes=24 << 30,
                   probe=lambda *a, **k: {("fp32", True): 60.0})  # at 96 px
    roomy, _ = resolve(RunConfig(), PHOTOS, slow)  # 5 minutes: ~13 epochs at 64 -> 96 px
    assert roomy.data.image_size == 96 and roomy.train.epochs >= ENOUGH_EPOCHS
    short = apply_overrides(RunConfig(), {"train.budget_minutes": "2"})
    cfg, notes = resolve(short, PHOTOS, slow)
    seconds = 2 * 60 * 0.95
    at_96 = seconds * 60 / 1500 / mean_cost(64, 96)
    assert at_96 < ENOUGH_EPOCHS  # ~5 epochs would fit at 96 px ...
    assert MIN_BUDGET_SIZE <= cfg.data.image_size < 96 and cfg.data.start_size <= cfg.data.image_size
    assert cfg.train.epochs > int(at_96)  # ... more fit at the lower resolution (the step time follows the pixels)
    assert cfg.train.epochs == int(seconds * 60 / 1500 / mean_cost(cfg.data.start_size, cfg.data.image_size, 96))
    assert [n for n in notes if n.startswith("image_size=")] == [
        next(n for n in notes if n.startswith(f"image_size={cfg.data.image_size} ("))]  # one note, the final choice
    assert any("a lower resolution" in n for n in notes)
    # a size the user chose is kept
    kept, _ = resolve(apply_overrides(short, {"data.image_size": "96"}), PHOTOS, slow)
    assert kept.data.image_size == 96 and kept.train.epochs < ENOUGH_EPOCHS


def test_a_probe_that_fails_falls_back_to_the_cpu_flags():
    def probe(*args, **form):
        raise RuntimeError("cannot build this model")

    machine = Machine(cuda=False, cpu_bf16=True, cuda_bf16=False, cores=2, memory_bytes=24 << 30, probe=probe)
    cfg, notes = resolve(RunConfig(), PHOTOS, machine)
    assert cfg.train.precision == "bf16" and any("estimated" in n for n in notes)


def test_repvgg_trains_in_the_online_form_where_it_was_measured_to_win():
    """CPU, from scratch, epochs from the time budget, images of 32 px or more: online (faster, as
    accurate at equal time); fixed epochs, a GPU, fine-tuning or tiny images: the standard form. Either
    way the log says why."""
    def form(machine, **overrides):
        cfg, notes = resolve(apply_overrides(RunConfig(), {"model.name": "repvgg_a0", **overrides}), PHOTOS, machine)
        return cfg.model.train_form, next((n for n in notes if n.startswith("train_form=")), "")

    online, why = form(CPU)
    assert online == "online" and "time budget" in why
    fixed, why = form(CPU, **{"train.epochs": "8"})
    assert fixed == "standard" and "fixed epochs" in why
    on_gpu, why = form(GPU)
    assert on_gpu == "standard" and "GPU" in why
    tuned, why = form(CPU, **{"model.pretrained": "imagenet"})
    assert tuned == "standard" and "fine-tuning" in why
    assert form(CPU, **{"model.train_form": "standard"}) == ("standard", "")  # asked for: kept, no note
    digits = DataFacts(num_train=1437, num_classes=10, class_counts=(144,) * 10, typical_side=8)
    tiny, notes = resolve(apply_overrides(RunConfig(), {"model.name": "repvgg_a0"}), digits, CPU)
    assert tiny.data.image_size < 32 and tiny.model.train_form == "standard"
    assert any(n.startswith("train_form=standard") and f"{tiny.data.image_size} px images" in n for n in notes)
    vgg, notes = resolve(apply_overrides(RunConfig(), {"model.name": "vgg11_bn"}), PHOTOS, CPU)
    assert vgg.model.train_form == "standard" and "train_form=standard (one form only)" in notes


def test_the_probe_measures_the_form_that_will_train():
    asked = []

    def probe(name, stride, size, classes, batch, precisions, layouts, **kwargs):
        asked.append(kwargs.get("train_form", "standard"))
        return {("fp32", True): 100.0}

    machine = Machine(cuda=False, cpu_bf16=False, cuda_bf16=False, cores=2, memory_bytes=24 << 30, probe=probe)
    for form in ("standard", "online"):
        resolve(apply_overrides(RunConfig(), {"model.name": "repvgg_a0", "model.train_form": form}), PHOTOS, machine)
    assert asked == ["standard", "online"]


def test_the_probe_times_real_training_steps():
    from plainnet.engine.probe import measure_train_rates

    rates = measure_train_rates("repvgg_a0", 8, 16, 3, 4, ("fp32", "bf16"), (True, False), seconds=0.05)
    assert set(rates) == {("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)}
    assert all(r > 0 for r in rates.values())
    online = measure_train_rates("repvgg_a0", 8, 16, 3, 4, ("fp32",), (True,), seconds=0.05, train_form="online")
    assert online[("fp32", True)] > 0


def test_each_choice_is_declared_once_and_every_implementation_covers_it():
    from plainnet.config import CHOICES
    from plainnet.data.augment import PRESETS, TTA_MODES
    from plainnet.models.vgg import HEADS

    assert tuple(PRESETS) == CHOICES["augment.preset"]  # a preset for every name the config accepts
    assert TTA_MODES is CHOICES["augment.tta"] and set(HEADS) | {""} == set(CHOICES["model.head"])
    with pytest.raises(ConfigError, match="augment.preset"):
        apply_overrides(RunConfig(), {"augment.preset": "rotate"})


def test_fine_tuning_choices():
    photos = DataFacts(num_train=300, num_classes=3, class_counts=(100, 100, 100), typical_side=256)
    fast = Machine(cuda=False, cpu_bf16=True, cuda_bf16=False, cores=2, memory_bytes=24 << 30,
                   probe=lambda *a, **k: {(p, cl): 200.0 for p in ("fp32", "bf16") for cl in (True, False)})
    scratch, _ = resolve(apply_overrides(RunConfig(), {"model.train_form": "standard"}), photos, fast)
    tuned, notes = resolve(apply_overrides(RunConfig(), {"model.pretrained": "imagenet"}), photos, fast)
    assert scratch.train.epochs > 15 and tuned.train.epochs == 15  # the budget fits more; fine-tuning stops at 15
    assert any(n.startswith("epochs=15 (") and "fine-tuning: at most 15 epochs" in n for n in notes)
    assert tuned.optim.lr == pytest.approx(scratch.optim.lr / 10)
    assert (scratch.model.backbone_lr_scale, tuned.model.backbone_lr_scale) == (1.0, 0.1)
    assert (scratch.model.freeze_epochs, tuned.model.freeze_epochs) == (0, 1)
    assert tuned.schedule.warmup_epochs == 1.5 < scratch.schedule.warmup_epochs
    for field in ("lr", "backbone_lr_scale", "freeze_epochs", "warmup_epochs"):
        assert any(n.startswith(f"{field}=") and "fine-tuning" in n for n in notes), field
    assert tuned.model.output_stride == 32 and tuned.data.crop_ratio == 0.875
    gpu, gpu_notes = resolve(apply_overrides(RunConfig(), {"model.pretrained": "imagenet", "model.name": "repvgg_d2se"}),
                             photos, GPU)
    assert gpu.data.image_size == 320 and gpu.data.crop_ratio == 1.0  # the published weights' preprocessing
    assert "image_size=320 (the pretrained weights' input size)" in gpu_notes and gpu.train.epochs == 15
    few, few_notes = resolve(apply_overrides(RunConfig(), {"model.pretrained": "imagenet", "train.epochs": "3"}),
                             photos, fast)
    assert few.model.freeze_epochs == 0  # no epoch to spare for the head alone
    assert "freeze_epochs=0 (fine-tuning in fewer than 4 epochs: every layer from the start)" in few_notes
    with pytest.raises(ConfigError, match="no published ImageNet weights for vgg16_dws"):
        resolve(apply_overrides(RunConfig(), {"model.pretrained": "imagenet", "model.name": "vgg16_dws"}), photos, fast)


def test_native_bf16_needs_the_cpu_flags_and_no_cap_below_them(monkeypatch):
    """A process started with ONEDNN_MAX_CPU_ISA=AVX2 (as ../shared/tools/slow-cpu does) runs bf16
    emulated even on a CPU that has it: plainnet must not call that native."""
    from plainnet import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert cpu.native_bf16({}) == (True, "AVX-512 BF16")
    for env in ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"DNNL_MAX_CPU_ISA": "avx512_core_vnni"},
                {"ATEN_CPU_CAPABILITY": "avx2"}):
        native, why = cpu.native_bf16(env)
        assert not native and next(iter(env)) in why
    assert cpu.native_bf16({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})[0]  # a cap above bf16 keeps it
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # a Zen 3
    assert cpu.native_bf16({}) == (False, "the CPU has no AVX-512 BF16 or AMX")


def test_the_process_check_agrees_with_onednn_under_an_avx2_cap():
    """plainnet's own check and torch's oneDNN, in a process capped at AVX2 (slow-cpu's environment):
    neither calls bf16 native; uncapped, plainnet says native only where torch's oneDNN agrees."""
    code = ("import torch; from plainnet.engine.recipe import cpu_bf16; "
            "print(cpu_bf16()[0], bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))")
    capped = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=capped, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
    from plainnet.engine.recipe import cpu_bf16

    assert not cpu_bf16()[0] or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_a_budget_too_short_for_the_floor_keeps_the_floor_and_says_how_long_it_takes(caplog):
    slow = Machine(cuda=False, cpu_bf16=False, cuda_bf16=False, cores=2, memory_bytes=24 << 30,
                   probe=lambda *a, **k: {("fp32", True): 100.0, ("fp32", False): 80.0})
    digits = DataFacts(num_train=1438, num_classes=10, class_counts=(144,) * 10, typical_side=8)
    short = apply_overrides(RunConfig(), {"train.budget_minutes": "0.1", "data.image_size": "8"})
    with caplog.at_level(logging.WARNING, logger="plainnet"):
        cfg, notes = resolve(short, digits, slow, spent_seconds=5)
    steps = 1438 // cfg.data.batch_size
    assert cfg.train.min_epochs == max(3, -(-150 // steps)) and cfg.train.epochs == cfg.train.min_epochs
    (warning,) = [r.getMessage() for r in caplog.records if "too short to learn" in r.getMessage()]
    need = cfg.train.min_epochs * 1438 / 100.0  # the floor's epochs at the measured rate
    assert f"needs ~{need:.0f} s of training" in warning and "--train.budget_minutes" in warning
    assert any("fewer than the floor" in n for n in notes)
    roomy, _ = resolve(apply_overrides(RunConfig(), {"train.budget_minutes": "5", "data.image_size": "8"}),
                       digits, slow)
    assert roomy.train.epochs > roomy.train.min_epochs  # the floor only matters when the budget is short
    fixed, _ = resolve(apply_overrides(RunConfig(), {"train.min_epochs": "9", "train.budget_minutes": "0.1"}),
                       digits, slow)
    assert fixed.train.epochs == 9


@pytest.mark.parametrize("overrides", [{}, {"model.name": "vgg11_bn", "train.epochs": "3"},
                                       {"train.precision": "fp32", "data.image_size": "64", "train.patience": "2"},
                                       {"model.name": "torchvision.resnet18"}])
def test_resolved_config_holds_concrete_types(overrides):
    """What leaves the recipe needs no cast: every ``int | str``-style field holds its number or bool,
    even when given on the command line, and no ``auto`` is left."""
    import dataclasses
    import typing

    facts = DataFacts(num_train=1722, num_classes=3, class_counts=(800, 800, 122), typical_side=256)
    cfg, _ = resolve(apply_overrides(RunConfig(), overrides), facts, CPU)
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        hints = typing.get_type_hints(type(values))
        for f in dataclasses.fields(values):
            kinds = [k for k in (typing.get_args(hints[f.name]) or (hints[f.name],)) if k is not str] or [str]
            value = getattr(values, f.name)
            assert value != "auto" and type(value) is kinds[0], (section.name, f.name, value)


def test_concrete_refuses_an_auto_left_behind():
    from plainnet.engine.recipe import concrete

    with pytest.raises(RuntimeError, match="data.image_size auto"):
        concrete(RunConfig())
