"""Training on real data: a short run on a potato-leaf subset, the run directory it leaves, bad files,
fine-tuning, distillation, EMA, other backbones and data layouts, and plain VGG's convergence."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import plainnet
from _util import FP32, digits_folder, potato_subset
from plainnet.data.folder import Splits
from plainnet.engine.task import distillation_loss
from plainnet.engine.recipe import cpu_supports_bf16
from plainnet.errors import DataError, PlainnetError

QUIET = {**FP32, "train.seed": "0"}


def test_short_real_run_learns_well_above_chance(tiny):
    assert tiny.epochs_run == 10
    # 3 classes: chance is 33%. 144 training images, 10 epochs at 48 px.
    assert tiny.final["val"]["acc"] >= 0.8
    assert tiny.final["val"]["images"] == 36


def test_run_directory_is_self_describing(tiny):
    run = tiny.run_dir
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert "auto" not in json.dumps(config)  # the resolved config, every choice explicit
    assert config["model"]["name"] == "repvgg_a0" and config["data"]["image_size"] == 48
    classes = json.loads((run / "classes.json").read_text())
    assert classes == ["Potato___Early_blight", "Potato___Late_blight", "Potato___healthy"]
    split = Splits.from_json(json.loads((run / "split.json").read_text()))
    assert len(split.train) == 144 and len(split.val) == 36
    assert not {s.path for s in split.train} & {s.path for s in split.val}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(10))
    # validated after the first epoch, every `val_every` epochs (measured: the first epoch's validation
    # against its training; written to config.yaml) and after the last; no stale values in between
    every = config["train"]["val_every"]
    validated = [int(r["epoch"]) for r in rows if r["val/acc"]]
    assert validated[0] == 0 and validated[-1] == 9 and len(validated) >= 10 // every
    assert all((e + 1) % every == 0 for e in validated[1:-1])
    assert all(float(r["train/loss"]) > 0 for r in rows)
    assert all(0 <= float(r["val/acc"]) <= 1 for r in rows if int(r["epoch"]) in validated)
    # training speed counts the 144 training images over the training time alone, not the validation
    assert all(float(r["train/img_s"]) * float(r["train/train_time"]) == pytest.approx(144, rel=1e-3) for r in rows)
    assert all(float(r["train/train_time"]) < float(r["train/epoch_time"]) for r in rows
               if int(r["epoch"]) in validated)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    payload = torch.load(run / "best.pt", weights_only=True)
    assert payload["classes"] == classes and payload["preprocess"]["image_size"] == 48
    best = max((r for r in rows if r["val/acc"]), key=lambda r: float(r["val/acc"]))
    assert payload["epoch"] == int(best["epoch"]) == tiny.best_epoch
    model = plainnet.load_model(run / "best.pt")
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 3)
    results = json.loads((run / "results.json").read_text())
    assert results["final"]["val"]["acc"] == tiny.final["val"]["acc"]


def make_bad_folder(root, datasets_dir):
    """Real potato images plus a corrupt JPEG, a text file named .jpg, and odd-but-valid modes."""
    src = sorted((datasets_dir / "potato" / "Potato___healthy").iterdir())
    for cls in ("a", "b", "c"):
        (root / cls).mkdir(parents=True)
    for i in range(8):
        for cls, off in (("a", 0), ("b", 8), ("c", 16)):
            shutil.copy(src[off + i], root / cls / f"{i}.jpg")
    (root / "a" / "truncated.jpg").write_bytes(src[30].read_bytes()[:3000])
    (root / "b" / "notes.jpg").write_text("this is not an image")
    rgb = Image.open(src[31]).convert("RGB")
    rgb.convert("CMYK").save(root / "c" / "cmyk.jpg")
    rgb.convert("RGBA").save(root / "a" / "rgba.png")
    rgb.convert("P").save(root / "b" / "palette.png")
    Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)).save(root / "c" / "gray16.png")
    return root


def test_bad_files_are_skipped_and_listed(tmp_path, datasets_dir, caplog):
    data = make_bad_folder(tmp_path / "data", datasets_dir)
    with caplog.at_level(logging.WARNING, logger="plainnet"):
        result = plainnet.train(data=str(data), model="repvgg_a0", epochs=1, overrides={
            **QUIET, "train.runs_dir": str(tmp_path / "runs"), "data.image_size": "32",
            "data.cache_dir": str(tmp_path / "cache")})
    results = json.loads((result.run_dir / "results.json").read_text())
    bad = sorted(p.split("/")[-1] for p, _ in results["bad_files"])
    assert bad == ["notes.jpg", "truncated.jpg"]
    assert "skipped 2 unreadable image(s)" in caplog.text and "notes.jpg" in caplog.text
    split = Splits.from_json(json.loads((result.run_dir / "split.json").read_text()))
    # The split lists the files used and, apart, the two it skipped: CMYK, RGBA, palette and 16-bit
    # images are all used.
    assert len(split.train) + len(split.val) == 8 * 3 + 6 - 2
    assert sorted(Path(p).name for p, _ in split.skipped) == bad
    assert result.final["val"]["images"] == len(split.val)


@pytest.mark.parametrize("layout,message", [
    ("empty_class", "no images"),
    ("single_class", "only one class"),
    ("no_images", "no"),
])
def test_unusable_folders_fail_before_training(tmp_path, datasets_dir, layout, message):
    src = sorted((datasets_dir / "potato" / "Potato___healthy").iterdir())
    root = tmp_path / layout
    (root / "a").mkdir(parents=True)
    if layout != "no_images":
        shutil.copy(src[0], root / "a" / "x.jpg")
    if layout == "empty_class":
        (root / "b").mkdir()
    if layout == "no_images":
        (root / "a" / "readme.txt").write_text("nothing here")
        (root / "b").mkdir()
    with pytest.raises(DataError, match=message):
        plainnet.train(data=str(root), epochs=1, overrides={**QUIET, "train.runs_dir": str(tmp_path / "runs")})
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_distillation_loss_math():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, temperature=4, alpha=0.0), ce)
    assert distillation_loss(t, t, y, temperature=4, alpha=1.0).abs() < 1e-6  # KL(t || t) = 0
    kl2 = distillation_loss(s, t, y, temperature=2, alpha=1.0)
    manual = torch.nn.functional.kl_div((s / 2).log_softmax(1), (t / 2).softmax(1), reduction="batchmean") * 4
    assert torch.allclose(kl2, manual)


def test_finetune_distill_and_ema_from_a_trained_run(tiny, tmp_path):
    """Fine-tune the potato model on digits (new 10-class head, frozen stem + stage 1), distilled from
    a digits teacher, with EMA weights exported."""
    data = str(digits_folder(tmp_path / "digits", 20))
    # 16 px at output stride 16, as the potato model was trained: a RepVGG block's identity branch exists
    # only where it does not downsample, so the checkpoint fits models of that stride.
    digits = {**QUIET, "train.runs_dir": str(tmp_path), "data.image_size": "16", "model.output_stride": "16",
              "augment.preset": "shift"}
    teacher = plainnet.train(data=data, model="repvgg_a0", epochs=1, overrides={**digits, "train.name": "teacher"})
    student = plainnet.train(data=data, model="repvgg_a0", epochs=1, overrides={
        **digits, "train.name": "student", "model.pretrained": str(tiny.best_checkpoint),
        "model.freeze_stages": "2", "distill.teacher": str(teacher.run_dir), "train.ema": "0.9"})
    source = plainnet.load_model(tiny.best_checkpoint)
    tuned = plainnet.load_model(student.best_checkpoint)
    assert tuned.linear.out_features == 10
    for frozen in ("stage0", "stage1"):
        for (name, a), b in zip(getattr(source, frozen).state_dict().items(), getattr(tuned, frozen).state_dict().values()):
            assert torch.equal(a, b), f"{frozen}.{name} changed although frozen"
    assert not torch.equal(source.stage2[0].rbr_dense.conv.weight, tuned.stage2[0].rbr_dense.conv.weight)
    # The exported weights are the EMA average, which differs from the raw weights of the last step.
    ckpt = torch.load(student.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last = torch.load(student.run_dir / "last.pt", weights_only=True)["state_dict"]
    key = "stage3.0.rbr_dense.conv.weight"
    assert torch.equal(last[key], ckpt[f"ema.module.{key}"])
    assert not torch.equal(last[key], ckpt[f"model.{key}"])


def test_fine_tuning_logs_its_choices_and_trains_the_head_alone_first(tiny, tmp_path):
    """A "pretrained" model from a local file: the automatic fine-tuning choices are logged, and during
    the head-only epoch nothing but the head changes (BatchNorm statistics included)."""
    data = str(digits_folder(tmp_path / "digits", 20))
    result = plainnet.train(data=data, model="repvgg_a0", epochs=1, overrides={
        **QUIET, "train.runs_dir": str(tmp_path), "data.image_size": "16", "model.output_stride": "16",
        "augment.preset": "shift", "model.pretrained": str(tiny.best_checkpoint), "model.freeze_epochs": "1"})
    log = (result.run_dir / "train.log").read_text()
    for choice in ("auto: backbone_lr_scale=0.1 (fine-tuning", "fine-tuning; sgd at batch",
                   "auto: warmup_epochs=0.5 (fine-tuning: short warm-up", "fine-tuning from "):
        assert choice in log, choice
    source = plainnet.load_model(tiny.best_checkpoint).state_dict()
    tuned = plainnet.load_model(result.best_checkpoint).state_dict()
    assert source.keys() == tuned.keys()
    for key in source:
        if key.startswith("linear."):
            assert tuned[key].shape[0] == 10  # the new 10-class head, trained
        else:
            assert torch.equal(source[key], tuned[key]), f"{key} changed during the head-only epoch"


def test_fine_tuning_standard_weights_in_the_online_form(tiny, tmp_path):
    """A standard-form checkpoint fine-tuned with ``--model.train_form online``: converted exactly, then
    trained in the online form (its checkpoint says so and reloads)."""
    from plainnet.layers import OnlineRepVGGBlock

    data = str(digits_folder(tmp_path / "digits", 20))
    result = plainnet.train(data=data, model="repvgg_a0", epochs=1, overrides={
        **QUIET, "train.runs_dir": str(tmp_path), "data.image_size": "16", "model.output_stride": "16",
        "augment.preset": "shift", "model.pretrained": str(tiny.best_checkpoint), "model.train_form": "online"})
    tuned = plainnet.load_model(result.best_checkpoint)
    assert tuned.arch["train_form"] == "online" and isinstance(tuned.stage1[0], OnlineRepVGGBlock)
    assert tuned.linear.out_features == 10


def test_distillation_from_a_teacher_named_with_imagenet_weights(tmp_path, monkeypatch):
    """``--distill.teacher repvgg_a0:imagenet``: the teacher is fine-tuned from its published weights (a
    Hugging Face cache populated here) on the same data first, then the student distils from it."""
    import huggingface_hub.constants
    from safetensors.torch import save

    from test_pretrained import _hf_cache

    timm = pytest.importorskip("timm", reason="timm is a test dependency ([test] extra)")
    published = timm.create_model("repvgg_a0")
    _hf_cache(tmp_path / "hf", "timm/repvgg_a0.rvgg_in1k", "model.safetensors", save(published.state_dict()))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = str(digits_folder(tmp_path / "digits", 20))
    student = plainnet.train(data=data, model="repvgg_a0", epochs=1, overrides={
        **QUIET, "train.runs_dir": str(tmp_path), "train.name": "student", "data.image_size": "32",
        "augment.preset": "shift", "distill.teacher": "repvgg_a0:imagenet"})
    teacher_dir = tmp_path / "student-teacher"
    assert student.run_dir == tmp_path / "student"
    config = yaml.safe_load((student.run_dir / "config.yaml").read_text())
    assert config["distill"]["teacher"] == str(teacher_dir)
    teacher_config = yaml.safe_load((teacher_dir / "config.yaml").read_text())
    assert teacher_config["model"]["pretrained"] == "imagenet" and teacher_config["model"]["output_stride"] == 32
    assert "fine-tuning from the ImageNet weights of repvgg_a0" in (teacher_dir / "train.log").read_text()
    tuned = plainnet.load_model(teacher_dir / "best.pt")
    assert tuned.linear.out_features == 10
    start = published.state_dict()["stem.conv_kxk.conv.weight"]
    moved = (tuned.stage0.rbr_dense.conv.weight - start).norm() / start.norm()
    assert 0 < moved < 0.2  # fine-tuned from the published stem, not trained from a fresh one


def test_torchvision_backbone_and_cifar_python_batches(tmp_path, datasets_dir):
    from plainnet.data.cifar import write_cifar_batches

    classes = sorted(p.name for p in (datasets_dir / "cifar10" / "train").iterdir())
    images, labels = [], []
    for i, cls in enumerate(classes):
        for f in sorted((datasets_dir / "cifar10" / "train" / cls).iterdir())[:12]:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(i)
    images, labels = np.stack(images), np.array(labels)
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(images[::2], labels[::2], classes, root, test_images=images[1::2], test_labels=labels[1::2])
    result = plainnet.train(data=str(root), model="torchvision.resnet18", epochs=1, overrides={
        **QUIET, "train.runs_dir": str(tmp_path / "runs")})
    assert json.loads((result.run_dir / "classes.json").read_text()) == classes
    assert result.final["val"]["images"] == 60
    model = plainnet.load_model(result.best_checkpoint)
    assert type(model.net).__name__ == "ResNet" and model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_plain_vgg_keeps_its_signal_through_every_layer(name):
    """Fast twin of the slow test below, on the mechanism: with He initialization the activations of
    plain VGG (no BN) keep their scale through all 13-16 convolutions and both hidden FC layers, which is
    what lets SGD start (torchvision's init shrinks the signal ~10x per FC layer). The recipe's lower
    learning rate and warm-up for plain VGG are asserted in test_config.py."""
    torch.manual_seed(0)
    model = plainnet.create_model(name, num_classes=10, small_input=True).eval()
    scales = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: scales.append(out.pow(2).mean().sqrt().item()))
             for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        logits = model(torch.randn(16, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(scales) == (13 if name == "vgg16" else 16) + 2
    assert all(0.2 < s / scales[0] < 5 for s in scales), [round(s / scales[0], 2) for s in scales]
    assert 0 < logits.std() < 1  # small final layer: no class starts out confidently


@pytest.mark.slow
def test_plain_vgg_without_bn_converges(tmp_path):
    """The tutorials' VGG-16 without BN fails under SGD at a usual learning rate (0.1, no warm-up): its
    loss blows up within the first steps and the run stops with an error; the automatic recipe (lower
    rate, warm-up) makes the same network learn."""
    # Digits at their native 8 px keep this affordable: VGG-16's trunk still has all 13 convs.
    common = {**QUIET, "train.runs_dir": str(tmp_path), "augment.preset": "shift", "data.image_size": "8"}
    with pytest.raises(PlainnetError, match="training diverged: the loss became nan at epoch 0"):
        plainnet.train(data="digits", model="vgg16", epochs=2, overrides={
            **common, "optim.lr": "0.1", "schedule.name": "constant", "schedule.warmup_epochs": "0"})
    # 8 epochs: after 6, whether it has left the plateau at chance yet is a matter of the seed (measured
    # 42%, 83%, 76% for seeds 0-2); after 8: 91% and 88% (seeds 0 and 3).
    recipe = plainnet.train(data="digits", model="vgg16", epochs=8, overrides=common)
    assert recipe.config.optim.lr < 0.1 and recipe.config.schedule.warmup_epochs >= 2
    assert recipe.final["val"]["acc"] > 0.75


@pytest.mark.parametrize("options", [
    {"augment.policy": "trivial", "augment.mixup": "0.2", "augment.cutmix": "1.0",
     "augment.random_erasing": "0.25", "data.normalize": "data"},
    {"optim.name": "adamw", "schedule.name": "cosine", "data.balance": "sampler", "train.grad_clip": "1.0",
     "augment.preset": "rrc", "augment.rotate": "15", "augment.tta": "flips"},
    # bf16-mixed end to end where bf16 is native; emulated (an AVX2 CPU, slow-cpu) it took 478 s of a Zen 3's
    # suite, so there fp32 (tests/test_channels_last.py trains a bf16 step on every CPU)
    {"optim.name": "adam", "schedule.name": "constant", "augment.preset": "vgg",
     "train.precision": "bf16" if cpu_supports_bf16() else "fp32", "train.channels_last": "false",
     "augment.policy": "randaugment"},
], ids=["policies-mixing", "adamw-cosine-sampler", "adam-bf16-where-native-vgg-jitter"])
def test_recipe_options_train(tmp_path, options):
    """Each option runs end to end and is in effect (two epochs learn too little to judge them by accuracy:
    measured 10-40% on these digits, so what is checked is what each option does)."""
    data = digits_folder(tmp_path / "digits", 50)
    result = plainnet.train(data=str(data), model="repvgg_a0", epochs=3, overrides={
        **QUIET, "train.runs_dir": str(tmp_path / "runs"), "data.image_size": "8", **options})
    assert result.epochs_run == 3
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    for key, value in options.items():
        section, field = key.split(".")
        assert saved[section][field] == yaml.safe_load(value)
    # the optimizer that ran: Adam's moment estimates, or SGD's momentum buffer
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert ("exp_avg" in state) == (options.get("optim.name", "sgd") in ("adam", "adamw"))
    # the schedule that ran (after the warm-up of the first epoch): cosine decays, constant stays
    lrs = [float(r["lr"]) for r in csv.DictReader((result.run_dir / "metrics.csv").open())]
    if options.get("schedule.name") == "cosine":
        assert lrs[2] < lrs[1]
    elif options.get("schedule.name") == "constant":
        assert lrs[1] == pytest.approx(lrs[2]) == pytest.approx(float(saved["optim"]["lr"]))
    # test-time augmentation scored, statistics from the data instead of ImageNet's
    assert (f"acc_{options['augment.tta']}" in result.final["val"]) if "augment.tta" in options else True
    mean = torch.load(result.best_checkpoint, weights_only=True)["preprocess"]["mean"]
    from plainnet.data.augment import IMAGENET_MEAN

    assert (list(mean) != list(IMAGENET_MEAN)) == (options.get("data.normalize") == "data")


def test_streaming_workers_and_early_stopping(tmp_path, datasets_dir):
    data = potato_subset(tmp_path / "potato", datasets_dir, 20)
    result = plainnet.train(data=str(data), model="repvgg_a0", epochs=6, overrides={
        **QUIET, "train.runs_dir": str(tmp_path / "runs"), "data.image_size": "32", "data.cache": "stream",
        "data.workers": "2", "optim.lr": "1e-12", "train.patience": "1", "train.monitor": "val/acc",
        "schedule.name": "constant", "schedule.warmup_epochs": "0"})
    # Nothing is learned at a learning rate of 1e-12, so val/acc stops improving (an equal value is no
    # improvement) and training stops early. (Not val/loss: BatchNorm's running statistics still settle,
    # nudging the loss down by tiny amounts.)
    assert result.epochs_run < 6
    assert result.final["val"]["images"] == 12
    assert not (tmp_path / "runs" / "cache").exists()  # streaming builds no decode cache


def test_a_run_out_of_time_refits_its_schedule_and_stops_in_time(tmp_path, datasets_dir):
    # A 3-second budget with a floor of one epoch (the default floor would be kept past the budget): the
    # probe plans at least that, but after the first one nothing fits before the deadline (the final scoring
    # and report alone are reserved more): training stops there, scores the best weights and says why, in
    # the log and in results.json.
    data = potato_subset(tmp_path / "data", datasets_dir, 12)
    result = plainnet.train(data=str(data), overrides={
        **QUIET, "train.budget_minutes": "0.05", "data.image_size": "32", "train.runs_dir": str(tmp_path / "runs"),
        "train.name": "late", "data.cache_dir": str(tmp_path / "cache"), "train.min_epochs": "1"})
    assert result.config.train.epochs >= 1 and result.epochs_run == 1
    results = json.loads((result.run_dir / "results.json").read_text())
    if result.config.train.epochs > 1:  # (a probe on a slow machine may plan just the one)
        assert f"epochs re-fitted from {result.config.train.epochs} to 1 after epoch 1" in " ".join(result.notes)
    # (one epoch of 27 images may or may not beat always answering the largest class: either is said)
    assert results["status"] in ("finished", "did_not_learn")
    assert ("epoch(s) ran" in results.get("problem", "")) == (results["status"] == "did_not_learn")
    assert results["epochs_run"] == 1 and "val" in results["final"]
    assert any("re-fitted" in note for note in results["auto"])
    header = (result.run_dir / "config.yaml").read_text().splitlines()
    assert any(line.startswith("# auto: epochs=") and "budget" in line for line in header)


def test_a_target_accuracy_stops_the_run_once_validation_reaches_it(tmp_path):
    result = plainnet.train(data="digits", epochs=8, overrides={
        **QUIET, "train.runs_dir": str(tmp_path), "data.image_size": "8", "data.batch_size": "32",
        "optim.lr": "0.01", "augment.preset": "none", "augment.tta": "none", "train.target_acc": "0.6"})
    assert result.epochs_run < 8 and result.best_metric >= 0.6 and result.status == "finished"
    (note,) = [n for n in result.notes if n.startswith("target reached")]
    assert f"after epoch {result.epochs_run}" in note


def test_progressive_resizing_trains_on_smaller_batches_of_the_same_view():
    from plainnet.data.cifar import ArrayDataset
    from plainnet.data.datamodule import ImageDataModule
    from plainnet.data.preprocess import Preprocess
    from plainnet.config import AugmentConfig

    ramp = np.linspace(0, 1, 40)  # smooth images (ramps), so any fair 2x downscale agrees with 2x2 means
    images = np.stack([np.stack([np.add.outer(ramp * (1 + i % 3), ramp * c) for c in range(3)], -1)
                       for i in range(16)])
    images = (images / images.max() * 255).astype(np.uint8)
    source = ArrayDataset(("a", "b"), images, np.arange(16) % 2, images, np.arange(16) % 2)
    dm = ImageDataModule(source, Preprocess(32, 0.8, (0.5,) * 3, (0.25,) * 3), AugmentConfig(preset="none"),
                         batch_size=8)
    dm.setup("fit")
    dm.trainer = type("T", (), {"training": True})()
    batch = (torch.from_numpy(images[:4]).permute(0, 3, 1, 2), torch.zeros(4, dtype=torch.long), torch.tensor(0))
    full, _ = dm.on_after_batch_transfer(batch, 0)
    dm.train_size = 16
    small, _ = dm.on_after_batch_transfer(batch, 0)
    assert full.shape[-1] == 32 and small.shape[-1] == 16
    # the same field of view at half the resolution, not a crop of it
    assert torch.allclose(torch.nn.functional.avg_pool2d(full, 2), small, atol=0.05)


def test_the_run_directory_reaches_ddp_children_only(monkeypatch, tmp_path):
    """The launcher hands its run directory to the processes Lightning starts inside ``trainer.fit`` and
    nowhere else: the variable is gone afterwards, and a process that is not a launched child ignores a
    stale one (two runs in one Python session, or a shell that exported it, never share a directory)."""
    import os

    from plainnet.engine.train import CHILD_RUN_DIR, _children_use, _launched_run_dir

    monkeypatch.delenv(CHILD_RUN_DIR, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("NODE_RANK", raising=False)
    with _children_use(tmp_path / "run"):
        assert os.environ[CHILD_RUN_DIR] == str(tmp_path / "run")
        assert _launched_run_dir() is None  # the launcher itself
        monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning sets for its second process
        assert _launched_run_dir() == tmp_path / "run"
        monkeypatch.delenv("LOCAL_RANK")
    assert CHILD_RUN_DIR not in os.environ
    monkeypatch.setenv(CHILD_RUN_DIR, str(tmp_path / "stale"))
    assert _launched_run_dir() is None
