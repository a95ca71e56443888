"""Int8 on CPUs with and without VNNI: agreement with fp32, accuracy and speed of onnxruntime int8 with
8-bit and 7-bit (``reduce_range``) weights.

    python benchmarks/int8_cpu.py RUN_DIR [RUN_DIR ...] [--images 300] [--emulate EPYC-Milan]

On x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels add pairs of products in a saturating int16,
so 8-bit weights can lose accuracy there; 7-bit weights cannot overflow. Both files are scored here on
this CPU and, with ``--emulate``, on an emulated CPU model without AVX-512/VNNI: QEMU's user-mode
emulator (Debian package qemu-user) runs onnxruntime with that CPU's feature flags, so onnxruntime
picks the same AVX2 kernels a real Zen 3 would run. Emulation gives the AVX2 kernels' exact outputs,
not their speed: latency is measured on this CPU only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def open_session(onnx_path: str, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def predict(onnx_path: str, x: np.ndarray) -> np.ndarray:
    session = open_session(onnx_path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 50]})[0] for i in range(0, len(x), 50)]).argmax(1)


def worker(npz: str, models: list[str]) -> None:
    """Run under the emulator: only numpy and onnxruntime, predictions as JSON on stdout."""
    x = np.load(npz)["x"]
    print(json.dumps({m: predict(m, x).tolist() for m in models}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--images", type=int, default=300, help="held-out images per run (emulation is slow)")
    parser.add_argument("--emulate", default="", help="QEMU CPU model without VNNI, e.g. EPYC-Milan (Zen 3)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1:])
    if not args.runs:
        sys.exit(__doc__)
    import torch

    from _common import write_section
    from plainnet.cpu import describe_cpu, has_vnni
    from plainnet.deploy.bench import Runner, make_runner, run_bench
    from plainnet.deploy.export import export_onnx
    from plainnet.deploy.quantize import QuantOptions, quantize_onnx
    from plainnet.models.reparam import reparameterize
    from plainnet.evaluation.evaluate import load_eval_data
    from plainnet.evaluation.inference import load_inference_model, sample_images

    qemu = shutil.which("qemu-x86_64") if args.emulate else None
    if args.emulate and not qemu:
        sys.exit("--emulate needs qemu-x86_64 (Debian: apt-get install qemu-user)")
    here = f"this CPU ({'VNNI' if has_vnni() else 'no VNNI'})"
    emulated = f"emulated {args.emulate} (AVX2, no VNNI)"
    tmp = Path(tempfile.mkdtemp(prefix="plainnet-int8-"))
    rows = []
    for run_dir in args.runs:
        loaded = load_inference_model(run_dir)
        fused = reparameterize(loaded.module).float()
        ev = load_eval_data(loaded)
        keep = torch.randperm(len(ev.labels), generator=torch.Generator().manual_seed(0))[: args.images]
        x = torch.cat([loaded.prepare(ev.images[keep[i : i + 64]]) for i in range(0, len(keep), 64)])
        labels = ev.labels[keep].numpy()
        calib = sample_images(loaded, n=256, split="train")
        if not len(calib):
            print(f"{run_dir}: no training images on disk to calibrate with; skipped", flush=True)
            continue
        fp32 = export_onnx(fused, tmp / f"{run_dir.name}.fp32.onnx", calib[:2], dynamic_batch=True).path
        with torch.no_grad():
            reference = fused(x).argmax(1).numpy()
        files = {bits: quantize_onnx(fp32, tmp / f"{run_dir.name}.int8-{bits}bit.onnx",
                                     [b.numpy() for b in calib.split(16)], QuantOptions(reduce_range=bits == 7))
                 for bits in (8, 7)}
        preds = {(bits, here): predict(str(p), x.numpy()) for bits, p in files.items()}
        if qemu:
            npz = tmp / f"{run_dir.name}.npz"
            np.savez(npz, x=x.numpy())
            cmd = [qemu, "-cpu", args.emulate, sys.executable, __file__, "--worker", str(npz),
                   *[str(p) for p in files.values()]]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            preds.update({(bits, emulated): np.array(out[str(p)]) for bits, p in files.items()})
        size = loaded.preprocess.image_size
        runners = [make_runner(fused, "fp32 eager", "eager", "fp32", 16, size),
                   make_runner(fused, "fp32 onnxruntime", "onnxruntime", "fp32", 16, size)]
        for bits, path in files.items():
            session = open_session(str(path))
            feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
                (16, 3, size, size), dtype=np.float32)}
            runners.append(Runner(f"int8 {bits}-bit", "onnxruntime", "int8", 16,
                                  lambda s=session, f=feed: s.run(None, f), 0, 0))
        speed = {r.model: r.p50_ms for r in run_bench(runners, rounds=5, min_seconds=0.5)}
        fp32_acc = (reference == labels).mean()
        for (bits, cpu), pred in preds.items():
            measured = cpu == here
            rows.append(f"| {run_dir.name} | {cpu} | {bits}-bit{' (reduce_range)' if bits == 7 else ''} | "
                        f"{fp32_acc:.2%} | {(pred == labels).mean():.2%} | {(pred == reference).mean():.2%} | "
                        + (f"{speed['fp32 eager'] / speed[f'int8 {bits}-bit']:.2f}x | "
                           f"{speed['fp32 onnxruntime'] / speed[f'int8 {bits}-bit']:.2f}x |" if measured
                           else "not measurable under emulation | |"))
            print(rows[-1], flush=True)
    lines = [
        "## Int8 without VNNI: 8-bit vs 7-bit weights",
        "",
        f"onnxruntime static int8 (QDQ, per-channel, 256 calibration images) of each run's fused model, "
        f"{args.images} held-out images. Run on {here}"
        + (f" and, through QEMU user-mode emulation, on {emulated}: the same onnxruntime picks that CPU's "
           "AVX2 kernels, so the predictions are what a real Zen 3 computes (speed is not)." if qemu else ".")
        + " Speed: batch 16, p50 over interleaved rounds on this CPU.",
        "",
        "| run | CPU | int8 weights | fp32 acc | int8 acc | agreement with fp32 | speed-up vs eager fp32 | vs ORT fp32 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "plainnet quantizes with 7-bit weights on x86 CPUs without VNNI (where 8-bit weights saturate) and "
        "8-bit elsewhere; `plainnet quantize --reduce-range/--full-range` overrides it, and an 8-bit model "
        "loaded on a CPU without VNNI logs a warning. The 7-bit file runs the same kernels as the 8-bit one "
        "(only the weight values differ), so its speed on a CPU is the 8-bit file's speed there.",
        "",
        "The runs: `potato` is RepVGG-A0 trained with the default recipe; `cifar` is RepVGG-A0 trained 6 epochs "
        "on CIFAR-10's 10,000-image subset (60% held-out), a model with less margin, where the CPUs differ. "
        "U8U8 (unsigned weights, which cannot saturate) was measured on the test suite's small 48 px potato model: "
        "97.8% agreement on both CPUs like 7-bit weights, but 2.5x slower than u8 x s8 on this CPU, so plainnet "
        "does not use it.",
        "",
        f"This CPU: {describe_cpu()}.",
    ]
    write_section("int8_cpu", "\n".join(lines))


if __name__ == "__main__":
    main()
