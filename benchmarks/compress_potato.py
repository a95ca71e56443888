"""The lightweighting comparison of docs/compression.md: ``plainnet compress`` on potato models.

    python benchmarks/compress_potato.py RUN_DIR [RUN_DIR ...] [-- extra plainnet compress options]

Each RUN_DIR is a potato run trained by plainnet; the runs used for docs/compression.md are those in
``TRAINED_BY`` (a RepVGG base, where pruning, int8 and distillation apply, and a VGG base, where the slim
and GAP heads and the depthwise-separable VGG also apply). The script runs the exact compress command on
each, then writes docs/compression.md with the commands, the tables, the verdicts and the charts.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, run  # noqa: E402

POTATO = "--data ../shared/datasets/potato --augment.preset rot"
TRAINED_BY = {
    "potato": f"plainnet train {POTATO} --name potato",
    "vgg11": f"plainnet train {POTATO} --model vgg11_bn --data.image_size 64 --epochs 12 --name vgg11",
}


def main() -> None:
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    run_dirs = [Path(a) for a in (args[: args.index("--")] if "--" in args else args)]
    if not run_dirs:
        sys.exit(__doc__)
    text = [
        "# Lightweighting with evidence: potato models, every method, measured",
        "",
        "The VGG-16 study lists five ways to shrink a model (smaller fully connected head or global average "
        "pooling, depthwise-separable convolutions, pruning, int8 quantization, knowledge distillation) with "
        "qualitative pros and cons only. Here they are run on trained models and measured side by side.",
        "",
        "Latency is single-process CPU time at 2 threads, p50 over interleaved rounds; float rows run the "
        "fused model in PyTorch eager fp32, int8 rows in onnxruntime. Unstructured pruning zeroes half the "
        "weights but stores and multiplies them all, so it is neither smaller nor faster.",
    ]
    for run_dir in run_dirs:
        out = run_dir / "compress"
        cmd = [str(Path(sys.executable).parent / "plainnet"), "compress", str(run_dir), "--out", str(out), *extra]
        proc, seconds = run(cmd)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        chart = f"compression-{run_dir.name}.png"
        shutil.copy(out / "compression.png", ROOT / "docs" / chart)
        trained_by = TRAINED_BY.get(run_dir.name, f"see {run_dir}/config.yaml")
        table = (out / "compression.md").read_text().strip()
        text += [
            "",
            f"## {run_dir.name}",
            "",
            f"Reproduce: `{trained_by}` then `plainnet compress runs/{run_dir.name}"
            f"{' ' + ' '.join(extra) if extra else ''}` (the compress command took {seconds / 60:.1f} min on the "
            "machine below).",
            "",
            table,
            "",
            f"![accuracy vs latency]({chart})",
        ]
        print(text[-3], flush=True)
    shown = " ".join(f"runs/{d.name}" for d in run_dirs)
    text += ["", f"_Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/compress_potato.py {shown}"
             f"{' -- ' + ' '.join(extra) if extra else ''}` on {machine()}._", ""]
    (ROOT / "docs" / "compression.md").write_text("\n".join(text))
    print("wrote docs/compression.md")


if __name__ == "__main__":
    main()
