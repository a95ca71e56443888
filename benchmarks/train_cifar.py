"""CIFAR-10 subset (10k train / 10k test, 32 px): test accuracy reached within a wall-time budget.

Runs the exact ``plainnet train`` command (the ``test/`` folder serves as the held-out split), timed end
to end, and records the test accuracy of the best epoch's weights.

    python benchmarks/train_cifar.py [-- extra plainnet train options, e.g. --epochs 16]
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, run, write_section  # noqa: E402


def main() -> None:
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    runs = Path(tempfile.mkdtemp(prefix="plainnet-bench-"))
    cmd = ["plainnet", "train", "--data", str(SHARED / "cifar10"), "--runs-dir", str(runs), "--name", "cifar",
           "--train.progress", "false", *extra]
    proc, seconds = run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]])
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    run_dir = runs / "cifar"
    results = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val = results["final"]["val"]
    tta = next((k for k in val if k.startswith("acc_")), None)
    speed = sorted(float(r["train/img_s"]) for r in rows)[len(rows) // 2]
    shown = " ".join(cmd).replace(str(SHARED), "../shared/datasets").replace(str(runs), "runs")
    lines = [
        "## CIFAR-10 subset: test accuracy within 10 minutes",
        "",
        f"Command: `{shown}`",
        "",
        "| test images | accuracy | " + (f"accuracy ({tta[4:]} TTA) | " if tta else "") +
        "epochs | training img/s (median) | wall time (whole command) |",
        "|---|---|" + ("---|" if tta else "") + "---|---|---|",
        f"| {val['images']} | {val['acc']:.2%} | " + (f"{val[tta]:.2%} | " if tta else "") +
        f"{results['epochs_run']} | {speed:.0f} | {seconds / 60:.1f} min |",
        "",
        "Per-epoch test accuracy: " + ", ".join(f"{float(r['val/acc']):.3f}" for r in rows) + ".",
        "",
        "Only 10k of CIFAR-10's 50k training images are in `../shared/datasets/cifar10`, so this is not "
        "comparable with full-data results.",
    ]
    write_section("train_cifar", "\n".join(lines))


if __name__ == "__main__":
    main()
