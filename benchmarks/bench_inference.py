"""Inference speed at 224 px: fused RepVGG-A0/B0 vs torchvision ResNet-18/34/50 and VGG-16, and timm's
re-parameterized RepVGG-A0, in PyTorch eager (fp32, bf16 autocast + channels_last), onnxruntime and
OpenVINO (fp32, and the same int8 QDQ ONNX), batch 1 and 16; all runners interleaved in one run.

    python benchmarks/bench_inference.py [--rounds 5] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_section  # noqa: E402

MODELS = ["repvgg_a0", "repvgg_a0:train", "repvgg_b0", "timm.repvgg_a0", "torchvision.resnet18",
          "torchvision.resnet34", "torchvision.resnet50", "torchvision.vgg16"]
VARIANTS = [("eager", "fp32"), ("eager", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
            ("openvino", "fp32"), ("openvino", "int8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    import torch

    from plainnet.deploy.bench import make_runner, plot_bench, resolve_model, run_bench

    runners = []
    for spec in MODELS:
        model, name = resolve_model(spec)
        variants = [("eager", "fp32")] if spec in ("repvgg_a0:train", "timm.repvgg_a0") else VARIANTS
        for backend, dtype in variants:
            for batch in (1, 16):
                runners.append(make_runner(model, name, backend, dtype, batch, args.size))
                print(f"ready: {name} {backend} {dtype} batch {batch}", flush=True)
    rows = run_bench(runners, rounds=args.rounds, min_seconds=args.seconds)
    doc_dir = Path(__file__).resolve().parents[1] / "docs"
    plot_bench(rows, doc_dir / "bench_inference.png")

    lines = [f"## Inference at {args.size} px: plain nets vs ResNets, eager and best backend", "",
             f"{len(runners)} runners, {args.rounds} interleaved rounds of ~{args.seconds} s each; p50 latency, "
             f"throughput at p50, achieved GFLOP/s (2 x MACs / latency). {torch.get_num_threads()} threads.", ""]
    for batch in (1, 16):
        sel = sorted((r for r in rows if r.batch == batch), key=lambda r: -r.images_per_s)
        ref = next(r for r in rows if r.batch == batch and r.model == "timm.repvgg_a0")
        lines += [f"### batch {batch}", "",
                  "| model | backend | dtype | p50 ms | p90 ms | images/s | GFLOP/s | params | GMACs | vs timm A0 eager fp32 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            lines.append(f"| {r.model} | {r.backend} | {r.dtype} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
                         f"{r.images_per_s:.1f} | {r.gflops:.0f} | {r.params / 1e6:.1f}M | {r.macs / 1e9:.2f} | "
                         f"{r.images_per_s / ref.images_per_s:.2f}x |")
        lines.append("")
    best = {}
    for batch in (1, 16):
        a0 = [r for r in rows if r.batch == batch and r.model == "repvgg_a0 (fused)"]
        top = max(a0, key=lambda r: r.images_per_s)
        ref = next(r for r in rows if r.batch == batch and r.model == "timm.repvgg_a0")
        best[batch] = (top, top.images_per_s / ref.images_per_s)
    top16, ratio16 = best[16]
    lines += [f"**Best plainnet path for RepVGG-A0 at batch 16: {top16.backend} {top16.dtype}, "
              f"{top16.images_per_s:.0f} images/s = {ratio16:.2f}x timm's re-parameterized RepVGG-A0 in eager fp32** "
              f"(batch 1: {best[1][0].backend} {best[1][0].dtype}, {best[1][1]:.2f}x).", "",
              "![throughput chart](bench_inference.png)", "",
              "Weights are random (speed does not depend on them); int8 is calibrated on random inputs here. "
              "Accuracy of int8 on trained models is in the quantization section. Not measured: `torch.compile` "
              "(compile time of minutes per model on 2 cores; DESIGN.md measured 1.09x for fused A0)."]
    write_section("bench_inference", "\n".join(lines))


if __name__ == "__main__":
    main()
