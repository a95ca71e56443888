"""The lightweighting comparison of docs/compression.md: ``plainnet compress`` on a potato model.

    python benchmarks/compress_potato.py RUN_DIR [-- extra plainnet compress options]

RUN_DIR is a potato run trained by plainnet, e.g. ``plainnet train --data ../shared/datasets/potato
--augment.preset rot --name potato``. The script runs the exact command, then writes docs/compression.md
with the command, the table, the verdict and the chart.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, run  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run_dir = Path(sys.argv[1])
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    out = run_dir / "compress"
    cmd = [str(Path(sys.executable).parent / "plainnet"), "compress", str(run_dir), "--out", str(out), *extra]
    proc, seconds = run(cmd)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    shutil.copy(out / "compression.png", ROOT / "docs" / "compression.png")
    train_cmd = "plainnet train --data ../shared/datasets/potato --augment.preset rot --name potato"
    text = "\n".join([
        "# Lightweighting with evidence: one potato model, every method, measured",
        "",
        "The VGG-16 study lists five ways to shrink a model (smaller fully connected head or global average "
        "pooling, depthwise-separable convolutions, pruning, int8 quantization, knowledge distillation) with "
        "qualitative pros and cons only. Here they are run on one model and measured side by side.",
        "",
        f"Reproduce: `{train_cmd}` then `plainnet compress runs/potato{' ' + ' '.join(extra) if extra else ''}` "
        f"(this run took {seconds / 60:.1f} min on the machine below).",
        "",
        (out / "compression.md").read_text().strip(),
        "",
        "![accuracy vs latency](compression.png)",
        "",
        "Notes: latency is single-process CPU time at 2 threads, p50 over interleaved rounds; float rows run "
        "the fused model in PyTorch eager fp32, int8 rows in onnxruntime. Unstructured pruning zeroes half the "
        "weights but stores and multiplies them all, so it is neither smaller nor faster. The head and "
        "depthwise-separable methods apply to VGG bases (see `tests/test_compress.py` for a VGG run); a RepVGG "
        "base already has a global-average-pool head and plain 3x3 convolutions.",
        "",
        f"_Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/compress_potato.py {run_dir}` on {machine()}._",
        "",
    ])
    (ROOT / "docs" / "compression.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
