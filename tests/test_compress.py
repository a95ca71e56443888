"""Lightweighting: structured pruning (VGG and RepVGG), distillation, and the compression table."""

from __future__ import annotations

import json

import pytest
import torch

import plainnet
from _util import FP32, digits_folder, run_cli
from plainnet.compress.compare import compress
from plainnet.compress.prune import structured_prune, unstructured_prune, weight_sparsity
from plainnet.evaluation.inference import load_inference_model, read_image
from plainnet.models import is_deployed

DIGITS = {**FP32, "data.image_size": "8", "augment.preset": "shift"}


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


@pytest.mark.long
def test_distillation_transfers_the_teachers_function(tiny, tmp_path, datasets_dir):
    """The teacher is the suite's potato model with two classes swapped in its head: it calls Early
    blight leaves Late blight and the other way round. A small student (A0 with half its channels)
    distilled from it (default T=2, alpha=0.7) learns the teacher's function, swap included; the same
    student trained alone learns the labels. A large, seed-independent effect that fails if the teacher's outputs do not reach the loss
    (no teacher, the wrong inputs, a broken alpha). Whether distillation *improves* accuracy depends on
    the setting: measured over seeds in docs/benchmarks.md ("Knowledge distillation")."""
    teacher = plainnet.load_model(tiny.best_checkpoint)
    with torch.no_grad():
        teacher.linear.weight[[0, 1]] = teacher.linear.weight[[1, 0]].clone()
        teacher.linear.bias[[0, 1]] = teacher.linear.bias[[1, 0]].clone()
    meta = {k: v for k, v in torch.load(tiny.best_checkpoint, weights_only=True).items() if k in ("classes", "preprocess")}
    teacher_path = plainnet.save_checkpoint(teacher, tmp_path / "swapped.pt", **meta)

    students = {}
    for name, extra in (("alone", {}), ("kd", {"distill.teacher": str(teacher_path)})):
        torch.manual_seed(0)  # the same small student for both: RepVGG-A0 with half its channels
        student = structured_prune(plainnet.create_model("repvgg_a0", num_classes=3, output_stride=16), 0.5,
                                   torch.randn(2, 3, 48, 48))
        students[name] = plainnet.train(data=tiny.config.data.path, epochs=5, model_instance=student, overrides={
            **FP32, "data.image_size": "48", "model.output_stride": "16", "augment.preset": "rot",
            "augment.tta": "none", "train.runs_dir": str(tmp_path / "runs"), "train.name": name,
            "train.label_smoothing": "0.0", "data.cache_dir": str(tmp_path / "cache"), **extra})
    assert students["kd"].config.distill.temperature == 2.0 and students["kd"].config.distill.alpha == 0.7

    # 40 blight leaves of each kind that none of the models saw.
    blight = sorted((datasets_dir / "potato").iterdir())[:2]
    files = [(f, label) for label, cls in enumerate(blight) for f in sorted(cls.iterdir())[100:140]]
    loaded = load_inference_model(students["alone"].run_dir)
    x = loaded.prepare(torch.stack([read_image(f, loaded.preprocess) for f, _ in files]))
    labels = torch.tensor([label for _, label in files])
    swapped = 1 - labels
    with torch.no_grad():
        assert (teacher.eval()(x).argmax(1) == swapped).float().mean() >= 0.7  # (the tiny model: ~80-90%)
        # The last weights: the best checkpoint is chosen by accuracy on the true labels, which picks the
        # epoch at which the distilled student followed its teacher least.
        follows = {name: (plainnet.load_model(r.run_dir / "last.pt").eval()(x).argmax(1) == swapped).float().mean().item()
                   for name, r in students.items()}
    # measured: the distilled student follows the swap on 65% of these leaves, the student alone on 9-19%
    # (slow-cpu, 1 and 2 threads)
    assert follows["kd"] > follows["alone"] + 0.3 and follows["alone"] < 0.3, follows


@pytest.mark.parametrize("methods,message", [
    ("prune:0.5,prnue:0.5", "unknown compression method 'prnue:0.5'"),
    ("prune:1.5", "prune:1.5: the ratio must be a number between 0 and 1"),
    ("prune", "prune: the ratio must be"),
    ("int8:4", "compression method int8 takes no parameter"),
    ("distill:repvgg_a9", "unknown model 'repvgg_a9'"),
])
def test_a_wrong_compression_method_is_one_line_before_anything_trains(tmp_path, methods, message):
    # (the run directory does not even exist: the methods are checked first)
    proc = run_cli("compress", tmp_path / "no-run", "--methods", methods)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.code == 2 and len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.long
def test_compress_table_on_a_tiny_model(tiny_run, tmp_path):
    result = compress(tiny_run, methods=["prune:0.5", "unstructured:0.5", "int8", "prune:0.5+int8", "distill",
                                         "gap-head"], finetune_epochs=1, distill_epochs=1, out_dir=tmp_path, rounds=1, min_seconds=0.02)
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


def test_vgg_students_are_smaller_and_keep_the_trunk():
    """Fast twin of the slow test below, without training: the slim and GAP heads take the base's
    convolutions unchanged and shrink the model; the depthwise-separable VGG costs fewer MACs."""
    from plainnet.compress.compare import _load_backbone

    base = plainnet.create_model("vgg11_bn", num_classes=10, small_input=True).eval()
    size = {}
    for head in ("slim", "gap"):
        student = plainnet.create_model("vgg11_bn", num_classes=10, small_input=True, head=head).eval()
        _load_backbone(student, base.state_dict())
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(student.features(x), base.features(x))
        size[head] = plainnet.summarize(student, 32).params
    assert size["gap"] < size["slim"] < plainnet.summarize(base, 32).params
    dws = plainnet.create_model("vgg16_dws", num_classes=10, small_input=True, head="gap")
    assert plainnet.summarize(dws, 32).macs < plainnet.summarize(base, 32).macs
    with pytest.raises(ValueError, match="trunks differ"):
        _load_backbone(plainnet.create_model("vgg13_bn", num_classes=10, small_input=True), base.state_dict())


@pytest.mark.slow
def test_compress_vgg_heads_and_depthwise(tmp_path):
    data = digits_folder(tmp_path / "digits", 20)
    base = plainnet.train(data=str(data), model="vgg11_bn", epochs=1,
                          overrides={**DIGITS, "train.runs_dir": str(tmp_path), "train.name": "vgg"})
    result = compress(base.run_dir, methods=["slim-head", "gap-head", "dws"], finetune_epochs=1,
                      distill_epochs=1, out_dir=tmp_path / "out", rounds=1, min_seconds=0.02)
    rows = {r.method: r for r in result.rows}
    assert set(rows) == {"base", "slim-head", "gap-head", "dws"}
    assert rows["gap-head"].params < rows["slim-head"].params < rows["base"].params
    assert rows["dws"].macs < rows["base"].macs
    again = compress(base.run_dir, methods=["gap-head"], finetune_epochs=1, out_dir=tmp_path / "out", rounds=1, min_seconds=0.02)
    assert [r.method for r in again.rows] == ["base", "gap-head"]  # a repeat replaces the earlier runs


def test_prune_cli(tiny_run, tmp_path):
    proc = run_cli("prune", tiny_run, "--ratio", "0.5", "--finetune-epochs", "1", "--runs-dir", tmp_path,
                   "--name", "p50")
    assert proc.code == 0, proc.stderr[-2000:]
    assert "equals its training form" in proc.stdout
    pruned = plainnet.load_model(tmp_path / "p50" / "best.pt")
    assert sum(p.numel() for p in pruned.parameters()) < 0.35 * sum(
        p.numel() for p in plainnet.load_model(tiny_run / "best.pt").parameters())
    assert json.loads((tmp_path / "p50" / "classes.json").read_text()) == json.loads(
        (tiny_run / "classes.json").read_text())
