"""Time-to-accuracy within a time budget: held-out accuracy and whole-command wall time of
``plainnet train --train.budget_minutes B`` on the potato leaves and the CIFAR-10 subset.

For the potato photos the new default (progressive resizing 64 -> 96 px) runs beside the fixed 96 px
recipe (``--data.start_size 96``); CIFAR-10's 32 px images are trained at their size. The configurations
alternate within each seed (interleaved), every run is the exact CLI command, timed from process start
to exit.

    python benchmarks/budget.py [--budgets 3 6] [--cifar-budgets 3] [--seeds 3] [--data potato cifar10]
                                [--section budget]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, run, write_section  # noqa: E402

CONFIGS = {
    "potato": [("default (progressive 64->96 px; lower when <10 epochs fit)", []),
               ("fixed 96 px", ["--data.image_size", "96", "--data.start_size", "96"])],
    "cifar10": [("32 px (default)", [])],
}


def _mean_spread(values: list[float]) -> str:
    return (f"{statistics.mean(values):.2%} ({min(values):.2%}-{max(values):.2%})" if len(values) > 1
            else f"{values[0]:.2%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=float, nargs="+", default=[3.0, 6.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cifar-budgets", type=float, nargs="+", default=None, help="(default: --budgets)")
    ap.add_argument("--data", nargs="+", default=["potato", "cifar10"], choices=list(CONFIGS))
    ap.add_argument("--section", default="budget", help="docs/benchmarks.md section to write")
    args = ap.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="plainnet-bench-"))
    plainnet = str(Path(sys.executable).parent / "plainnet")
    results: dict[tuple, list[dict]] = {}
    for data in args.data:
        for budget in (args.cifar_budgets or args.budgets) if data == "cifar10" else args.budgets:
            for seed in range(args.seeds):
                for label, extra in CONFIGS[data]:
                    name = f"{data}-{budget:g}-{seed}-{sum(map(len, results.values()))}"
                    cmd = [plainnet, "train", "--data", str(SHARED / data), "--runs-dir", str(runs), "--name", name,
                           "--train.progress", "false", "--train.budget_minutes", f"{budget:g}",
                           "--train.seed", str(seed), *extra]
                    proc, seconds = run(cmd)
                    if proc.returncode != 0:
                        sys.exit(proc.stderr[-3000:])
                    res = json.loads((runs / name / "results.json").read_text())
                    val = res["final"]["val"]
                    tta = next((k for k in val if k.startswith("acc_")), None)
                    row = {"acc": val["acc"], "tta": val.get(tta, val["acc"]), "seconds": seconds,
                           "epochs": res["epochs_run"]}
                    results.setdefault((data, budget, label), []).append(row)
                    print(data, budget, seed, label, row, flush=True)
    lines = [
        "## Time-to-accuracy within a budget (`--train.budget_minutes`)",
        "",
        "Held-out accuracy (best epoch's weights; potato: the stratified 20%, CIFAR-10 subset: its 10k test "
        "images) and wall time of the whole command (process start to exit: data, speed probe, training, "
        "validation, final scoring, report). Mean and range over seeds (`--train.seed`; the split stays "
        "fixed).",
        "",
        "| data | budget | recipe | runs | accuracy | with flip TTA | epochs | wall time (median, range) | "
        "wall time / budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (data, budget, label), rows in results.items():
        secs = [r["seconds"] for r in rows]
        lines.append(
            f"| {data} | {budget:g} min | {label} | {len(rows)} | {_mean_spread([r['acc'] for r in rows])} | "
            f"{_mean_spread([r['tta'] for r in rows])} | {statistics.median(r['epochs'] for r in rows):g} | "
            f"{statistics.median(secs) / 60:.2f} min ({min(secs) / 60:.2f}-{max(secs) / 60:.2f}) | "
            f"{min(secs) / 60 / budget:.2f}-{max(secs) / 60 / budget:.2f} |")
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
