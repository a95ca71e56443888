"""Deployment: export parity (ONNX and .pt2), fused graphs, predictions from exports, int8, bench."""

from __future__ import annotations

import json

import pytest
import torch

import plainnet
from _util import randomize_bn_, run_cli
from plainnet.deploy.bench import make_runner, resolve_model, run_bench
from plainnet.deploy.export import export_onnx, export_pt2
from plainnet.deploy.quantize import NAIVE, QuantOptions, quantize_dynamic_linear, quantize_onnx, quantize_pt2e
from plainnet.evaluation.inference import load_inference_model, sample_images


# (D2se's SE layers surviving fusion are checked in test_reparam.py; its 120M weights make exporting slow.)
@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_b1g2", "vgg11_bn", "vgg16_dws"])
def test_onnx_export_parity_and_fused_graph(name, tmp_path):
    model = randomize_bn_(plainnet.create_model(name, num_classes=5, small_input=True)).eval()
    x = torch.randn(4, 3, 32, 32)
    result = export_onnx(model, tmp_path / "m.onnx", x, metadata={"classes": list("abcde")}, dynamic_batch=True)
    assert result.parity.rel <= 1e-4
    assert [f.name for f in tmp_path.iterdir()] == ["m.onnx"]  # one self-contained file, no side files
    assert "BatchNormalization" not in result.ops  # BN folded (RepVGG blocks fused, VGG-BN folded)
    if name.startswith("repvgg"):
        assert "Add" not in result.ops  # one 3x3 conv per block: no branches left
        blocks = sum(isinstance(m, plainnet.layers.RepVGGBlock) for m in model.modules())
        assert result.ops["Conv"] == blocks


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_pt2_export_parity(tmp_path, dynamic_batch):
    model = randomize_bn_(plainnet.create_model("repvgg_a0", num_classes=3, small_input=True)).eval()
    x = torch.randn(256, 3, 32, 32)  # 3 MiB of example images
    result = export_pt2(model, tmp_path / "m.pt2", x[:8], metadata={"classes": ["a", "b", "c"]},
                        dynamic_batch=dynamic_batch)
    assert result.parity.rel <= 1e-5
    assert not any("batch_norm" in op for op in result.ops)
    fused_bytes = sum(p.numel() * 4 for p in plainnet.reparameterize(model).parameters())
    assert result.path.stat().st_size < fused_bytes + 2**20  # the weights, not the example's whole storage


@pytest.mark.long
def test_quantize_cli_pt2e(tiny_run, tmp_path):
    out = tmp_path / "tiny.int8.pt2"
    proc = run_cli("quantize", tiny_run, "--method", "pt2e", "--calib-images", "64", "-o", out)
    assert proc.code == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    # 36 held-out images of a 10-epoch 48 px model with small margins: a loose bound that broken scales
    # (~1/3 agreement) would still fail; accuracy on real models is in docs/benchmarks.md
    assert report["agreement"]["top1_agreement"] >= 0.8
    assert report["int8_bytes"] < report["fp32_bytes"] / 2  # int8 weights only
    loaded = load_inference_model(out)  # predict-ready: classes travel in the file, any batch size
    assert loaded.classes == json.loads((tiny_run / "classes.json").read_text()) and loaded.backend.fixed_batch is None
    x = sample_images(loaded, n=5, split="val")
    assert loaded(x).shape == (5, len(loaded.classes))


def test_export_cli_predict_from_onnx_matches_checkpoint(tiny_run, tmp_path, datasets_dir):
    onnx_path = tmp_path / "tiny.onnx"
    proc = run_cli("export", tiny_run, "-o", onnx_path)
    assert proc.code == 0, proc.stderr
    assert "matches PyTorch on 16 image(s)" in proc.stdout and "Conv" in proc.stdout
    assert "Add " not in proc.stdout and "BatchNormalization" not in proc.stdout
    # both runtimes run the file side by side; the fp32 export keeps PyTorch's answers in both
    assert "onnxruntime:" in proc.stdout and "openvino:" in proc.stdout
    assert "fastest on this CPU keeping >= 99% agreement:" in proc.stdout
    folder = tmp_path / "late_blight"
    folder.mkdir()
    for f in sorted((datasets_dir / "potato" / "Potato___Late_blight").iterdir())[:120]:
        (folder / f.name).symlink_to(f)

    def predict(model_path):
        out = run_cli("predict", model_path, folder, "--format", "json")
        assert out.code == 0, out.stderr
        return [(r["path"], r["top_k"][0]["class"]) for r in json.loads(out.stdout)["predictions"]]

    assert predict(onnx_path) == predict(tiny_run)  # the same class for every one of the 120 images
    meta = load_inference_model(onnx_path)
    assert meta.classes == json.loads((tiny_run / "classes.json").read_text())
    assert meta.preprocess.image_size == 48 and meta.backend.fixed_batch == 1


def test_int8_agrees_with_fp32_on_a_trained_model(tiny_run, tmp_path):
    loaded = load_inference_model(tiny_run)
    calib = sample_images(loaded, n=64, split="train")
    check = torch.cat([sample_images(loaded, n=144, split=s, seed=1) for s in ("train", "val")])  # all 180
    fp32 = export_onnx(loaded.module, tmp_path / "fp32.onnx", calib[:4], dynamic_batch=True,
                       metadata={"classes": loaded.classes, "preprocess": loaded.preprocess.to_dict()}).path
    # "good" is the default for this CPU (8-bit weights with VNNI, 7-bit without); "7-bit" is what a CPU
    # without VNNI gets, checked here on any CPU.
    for options, name in ((QuantOptions(), "good"), (QuantOptions(reduce_range=True), "7-bit"), (NAIVE, "naive"),
                          (QuantOptions(calibration="percentile", keep_ends_float=True), "percentile")):
        path = quantize_onnx(fp32, tmp_path / f"{name}.onnx", [b.numpy() for b in calib.split(16)], options)
        q = load_inference_model(path)
        assert q.classes == loaded.classes  # metadata carried over
        agree = (q(check).argmax(1) == loaded(check).argmax(1)).float().mean().item()
        assert agree >= (0.5 if name == "naive" else 0.9), (name, agree)
    assert (tmp_path / "good.onnx").stat().st_size < fp32.stat().st_size / 2
    # torchao PT2E (the PyTorch-native path), run uncompiled: calibrated at batch 16, run at batch 180
    pt2e = quantize_pt2e(loaded.module, calib[:1], list(calib.split(16)), compile=False)
    agree = (pt2e(check).argmax(1) == loaded(check).argmax(1)).float().mean().item()
    assert agree >= 0.9, ("pt2e", agree)
    assert any("quantize_per" in str(n.target) for n in pt2e.graph.nodes)  # really int8, not a float copy


def test_int8_weight_range_follows_the_cpu(tmp_path, monkeypatch, caplog):
    """x86 without VNNI: onnxruntime's u8 x s8 kernels saturate, so weights get 7 bits; a model with
    8-bit weights loaded on such a CPU says so."""
    import plainnet.cpu as cpu

    model = plainnet.create_model("repvgg_a0", num_classes=3, small_input=True).eval()
    x = torch.randn(16, 3, 32, 32)
    fp32 = export_onnx(model, tmp_path / "m.onnx", x[:2], dynamic_batch=True,
                       metadata={"classes": ["a", "b", "c"], "preprocess": {"image_size": 32, "crop_ratio": 1.0,
                                 "mean": [0.5] * 3, "std": [0.25] * 3}}).path
    monkeypatch.setattr(cpu, "_is_x86", lambda: True)
    for flags, saturates in (({"avx2", "fma"}, True), ({"avx2", "avx512_vnni"}, False), ({"avx2", "avx_vnni"}, False)):
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert cpu.int8_pairs_saturate() is saturates and QuantOptions().resolved_reduce_range() is saturates
        assert QuantOptions(reduce_range=True).resolved_reduce_range() and not QuantOptions(
            reduce_range=False).resolved_reduce_range()
    monkeypatch.setattr(cpu, "_is_x86", lambda: False)  # ARM: dot products accumulate in int32
    assert not cpu.int8_pairs_saturate()

    monkeypatch.setattr(cpu, "_is_x86", lambda: True)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    paths = {bits: quantize_onnx(fp32, tmp_path / f"q{bits}.onnx", [x.numpy()],
                                 QuantOptions(reduce_range=bits == 7)) for bits in (7, 8)}
    for bits, path in paths.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="plainnet"):
            load_inference_model(path)
        assert ("no VNNI" in caplog.text) is (bits == 8), (bits, caplog.text)


def test_openvino_runs_the_same_onnx_files(tiny_run, tmp_path):
    from plainnet.deploy.bench import openvino_runner

    loaded = load_inference_model(tiny_run)
    calib = sample_images(loaded, n=64, split="train")
    check = torch.cat([sample_images(loaded, n=144, split=s, seed=1) for s in ("train", "val")])
    fp32 = export_onnx(loaded.module, tmp_path / "fp32.onnx", calib[:4], dynamic_batch=True).path
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", [b.numpy() for b in calib.split(16)], QuantOptions())
    reference = loaded(check)
    ov_fp32 = torch.from_numpy(openvino_runner(fp32)(check.numpy()))
    assert torch.allclose(ov_fp32, reference, atol=1e-3 * reference.abs().max().item())
    ov_int8 = torch.from_numpy(openvino_runner(int8)(check.numpy()))
    assert (ov_int8.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.9
    assert not torch.allclose(ov_int8, reference, atol=1e-4)  # it really ran quantized
    runner = make_runner(loaded.module, "tiny", "openvino", "int8", 2, 48)
    (row,) = run_bench([runner], rounds=1, min_seconds=0.01)
    assert row.backend == "openvino" and row.calls >= 1


def test_dynamic_linear_int8_for_vgg_head(tmp_path):
    model = plainnet.create_model("vgg11", num_classes=4, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    fp32 = export_onnx(model, tmp_path / "vgg.onnx", x, dynamic_batch=True).path
    q = quantize_dynamic_linear(fp32, tmp_path / "vgg8.onnx")
    from plainnet.deploy.export import onnx_op_histogram, ort_callable
    from plainnet.model_files import onnx_session

    assert "MatMulInteger" in onnx_op_histogram(q) or "DynamicQuantizeLinear" in onnx_op_histogram(q)
    out = ort_callable(onnx_session(q))(x)
    ref = model(x)
    assert out.shape == ref.shape and (out.argmax(1) == ref.argmax(1)).all()


def test_bench_produces_a_table(tmp_path):
    proc = run_cli("bench", "repvgg_a0", "repvgg_a0:train", "torchvision.resnet18", "--size", "32", "--batch", "2",
                   "--backend", "eager,onnxruntime", "--dtype", "fp32,bf16", "--rounds", "2", "--seconds", "0.05",
                   "--out", tmp_path)
    assert proc.code == 0, proc.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())
    keys = {(r["model"], r["backend"], r["dtype"], r["batch"]) for r in rows}
    assert ("repvgg_a0 (fused)", "eager", "fp32", 2) in keys and ("repvgg_a0 (train form)", "eager", "bf16", 2) in keys
    assert ("torchvision.resnet18", "onnxruntime", "fp32", 2) in keys
    assert not any(k[1] == "onnxruntime" and k[2] == "bf16" for k in keys)  # skipped, with a note
    assert "skipped" in proc.stderr
    assert all(r["p50_ms"] > 0 and r["images_per_s"] > 0 and r["p90_ms"] >= r["p50_ms"] for r in rows)
    fused = next(r for r in rows if r["model"] == "repvgg_a0 (fused)")
    train = next(r for r in rows if r["model"] == "repvgg_a0 (train form)")
    assert fused["params"] < train["params"] and fused["macs"] < train["macs"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    top = max((r for r in rows if r["model"] == "torchvision.resnet18"), key=lambda r: r["images_per_s"])
    assert f"fastest for torchvision.resnet18 at batch 2: {top['backend']} {top['dtype']}" in proc.stdout


@pytest.mark.parametrize("spec,message", [("vgg17", "unknown model 'vgg17': did you mean vgg19"),
                                          ("missing/model.pt", "missing/model.pt: no such model file"),
                                          ("timm.no_such_net", "unknown timm model 'no_such_net'")])
def test_bench_of_an_unknown_model_is_one_line_before_anything_runs(tmp_path, spec, message):
    proc = run_cli("bench", "vgg11", spec, "--batch", "1", "--size", "32", "--out", tmp_path / "out")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.code == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()  # vgg11, named first, was not timed either


def test_bench_runners_in_process():
    model, name = resolve_model("vgg11_bn")
    runner = make_runner(model, name, "eager", "fp32", 1, 32)
    (row,) = run_bench([runner], rounds=1, min_seconds=0.01)
    assert row.calls >= 1 and name == "vgg11_bn"
    assert row.macs == plainnet.summarize(model, 32).macs and row.params == plainnet.summarize(model, 32).params


def test_bench_statistics_interleave_runners_and_follow_their_call_times(monkeypatch):
    """With a fake clock: runner a takes 2 ms a call (one 10 ms outlier), b 8 ms; rounds alternate them."""
    from plainnet.deploy import bench

    now, order = [0.0], []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])

    def call(name, durations):
        calls = iter(durations)

        def fn():
            order.append(name)
            now[0] += next(calls)
        return fn

    a = bench.Runner("a", "eager", "fp32", 4, call("a", [0.002] * 9 + [0.010] + [0.002] * 90), macs=10**9, params=7)
    b = bench.Runner("b", "eager", "fp32", 4, call("b", [0.008] * 100), macs=10**9, params=7)
    rows = {r.model: r for r in bench.run_bench([a, b], rounds=3, min_seconds=0.02)}
    assert order[:10] == ["a"] * 10 and order[10:13] == ["b"] * 3 and order[13] == "a"  # round by round
    assert rows["a"].calls == 30 and rows["b"].calls == 9
    assert rows["a"].p50_ms == pytest.approx(2.0) and rows["b"].p50_ms == pytest.approx(8.0)
    assert rows["a"].p90_ms == pytest.approx(2.0) and max(a.times) == pytest.approx(0.010)  # the outlier is not p50
    assert rows["a"].images_per_s == pytest.approx(4 / 0.002) and rows["b"].images_per_s == pytest.approx(4 / 0.008)
    assert rows["a"].gflops == pytest.approx(2 * 10**9 * 4 / 0.002 / 1e9)  # multiply-adds count twice


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine; the GPU path is "
                    "checked on a GPU machine (plainnet bench --device cuda)")
def test_gpu_bench_and_fusion():
    model = plainnet.create_model("repvgg_a0", num_classes=3).cuda()
    fused = plainnet.reparameterize(model.half())
    assert next(fused.parameters()).dtype == torch.float16
    runner = make_runner(plainnet.create_model("repvgg_a0", deploy=True).eval(), "a0", "eager", "fp16", 4, 64, "cuda")
    (row,) = run_bench([runner], rounds=1, min_seconds=0.05)
    assert row.images_per_s > 0
