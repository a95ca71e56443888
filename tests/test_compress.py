"""Lightweighting: structured pruning (VGG and RepVGG), distillation, and the compression table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plainnet
from plainnet.compress.compare import compress
from plainnet.compress.prune import structured_prune, unstructured_prune, weight_sparsity
from plainnet.models import is_deployed

DIGITS = {"train.progress": "false", "data.image_size": "8", "augment.preset": "shift"}


@pytest.mark.parametrize("name", ["repvgg_a0", "vgg11_bn"])
def test_pruned_model_is_smaller_finetunes_reloads_and_fuses(name, tmp_path):
    torch.manual_seed(0)
    model = plainnet.create_model(name, num_classes=10, output_stride=8)
    x = torch.randn(2, 3, 8, 8)
    before = sum(p.numel() for p in model.parameters())
    structured_prune(model, 0.5, x, steps=2)
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.35 * before  # half the channels: about a quarter of the weights
    result = plainnet.train(data="digits", epochs=1, model_instance=model,
                            overrides={**DIGITS, "train.runs_dir": str(tmp_path), "model.name": name})
    reloaded = plainnet.load_model(result.best_checkpoint)  # no access to the original architecture needed
    assert sum(p.numel() for p in reloaded.parameters()) == after
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=1e-5, atol=1e-5)
    fused = plainnet.reparameterize(reloaded)
    plainnet.verify_equivalence(reloaded, fused, torch.randn(4, 3, 8, 8))
    assert is_deployed(fused)
    fused_path = plainnet.save_checkpoint(fused, tmp_path / "fused.pt")
    assert sum(p.numel() for p in plainnet.load_model(fused_path).parameters()) < after


def test_unstructured_pruning_only_zeroes():
    model = plainnet.create_model("repvgg_a0", num_classes=3, small_input=True)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    unstructured_prune(model, 0.5)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    assert weight_sparsity(model) == pytest.approx(0.5, abs=0.01)


def split_folder(root: Path, datasets_dir: Path, train: slice, val: slice) -> Path:
    for cls in sorted((datasets_dir / "potato").iterdir()):
        files = sorted(cls.iterdir())
        for split, sel in (("train", train), ("val", val)):
            (root / split / cls.name).mkdir(parents=True)
            for f in files[sel]:
                (root / split / cls.name / f.name).symlink_to(f)
    return root


def test_distillation_improves_the_student(tmp_path, datasets_dir):
    """A teacher trained on 100 images per class (~95% held-out) and a student given 20 other images per
    class, scored on the rest; same seed and recipe, only distillation differs."""
    common = {"train.progress": "false", "data.image_size": "48", "model.output_stride": "16",
              "augment.preset": "rot", "train.runs_dir": str(tmp_path / "runs"), "train.seed": "0"}
    teacher_data = split_folder(tmp_path / "teacher", datasets_dir, slice(0, 100), slice(100, 120))
    teacher = plainnet.train(data=str(teacher_data), model="repvgg_a0", epochs=10,
                             overrides={**common, "train.name": "teacher"})
    data = split_folder(tmp_path / "data", datasets_dir, slice(100, 120), slice(120, 220))
    student = {**common, "optim.name": "adamw", "optim.lr": "0.001", "schedule.name": "cosine",
               "schedule.warmup_epochs": "0", "train.label_smoothing": "0.0"}
    alone = plainnet.train(data=str(data), model="repvgg_a0", epochs=8, overrides={**student, "train.name": "alone"})
    taught = plainnet.train(data=str(data), model="repvgg_a0", epochs=8,
                            overrides={**student, "train.name": "kd", "distill.teacher": str(teacher.run_dir)})
    assert taught.config.distill.teacher == str(teacher.run_dir) and taught.config.distill.temperature == 2.0
    assert taught.final["val"]["images"] == alone.final["val"]["images"] == 100 + 100 + 32
    assert taught.final["val"]["acc"] > alone.final["val"]["acc"]


def test_compress_table_on_a_tiny_model(tiny_run, tmp_path):
    result = compress(tiny_run, methods=["prune:0.5", "unstructured:0.5", "int8", "prune:0.5+int8", "distill",
                                         "gap-head"], finetune_epochs=1, distill_epochs=1, out_dir=tmp_path, rounds=1)
    rows = {r.method: r for r in result.rows}
    assert list(rows) == ["base", "prune:0.5", "unstructured:0.5", "int8", "prune:0.5+int8", "distill"]
    base = rows["base"]
    assert base.accuracy == result.base_accuracy
    assert rows["prune:0.5"].params < 0.35 * base.params and rows["prune:0.5"].macs < 0.35 * base.macs
    assert rows["unstructured:0.5"].params == base.params  # zeros are still stored and multiplied
    assert rows["unstructured:0.5"].file_bytes == pytest.approx(base.file_bytes, rel=0.01)
    assert rows["int8"].file_bytes < base.file_bytes / 3
    assert rows["prune:0.5+int8"].file_bytes < rows["int8"].file_bytes
    assert all(set(r.latency_ms) == {1, 16} and min(r.latency_ms.values()) > 0 for r in result.rows)
    assert any("gap-head" in s for s in result.skipped)  # RepVGG has no FC head to slim
    assert "smallest is" in result.verdict and "fastest is" in result.verdict
    for name in ("compression.md", "compression.csv", "compression.json", "compression.png"):
        assert (tmp_path / name).is_file()
    assert "| prune:0.5+int8 |" in (tmp_path / "compression.md").read_text()


def test_compress_vgg_heads_and_depthwise(tmp_path):
    base = plainnet.train(data="digits", model="vgg11_bn", epochs=1,
                          overrides={**DIGITS, "train.runs_dir": str(tmp_path), "train.name": "vgg"})
    result = compress(base.run_dir, methods=["slim-head", "gap-head", "dws"], finetune_epochs=1,
                      distill_epochs=1, out_dir=tmp_path / "out", rounds=1)
    rows = {r.method: r for r in result.rows}
    assert set(rows) == {"base", "slim-head", "gap-head", "dws"}
    assert rows["gap-head"].params < rows["slim-head"].params < rows["base"].params
    assert rows["dws"].macs < rows["base"].macs
    again = compress(base.run_dir, methods=["gap-head"], finetune_epochs=1, out_dir=tmp_path / "out", rounds=1)
    assert [r.method for r in again.rows] == ["base", "gap-head"]  # a repeat replaces the earlier runs


def test_prune_cli(tiny_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "plainnet", "prune", str(tiny_run), "--ratio", "0.5",
                           "--finetune-epochs", "1", "--runs-dir", str(tmp_path), "--name", "p50"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "equals its training form" in proc.stdout
    pruned = plainnet.load_model(tmp_path / "p50" / "best.pt")
    assert sum(p.numel() for p in pruned.parameters()) < 0.35 * sum(
        p.numel() for p in plainnet.load_model(tiny_run / "best.pt").parameters())
    assert json.loads((tmp_path / "p50" / "classes.json").read_text()) == json.loads(
        (tiny_run / "classes.json").read_text())
