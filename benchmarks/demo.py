"""The README's first command on this machine: ``plainnet demo`` as a user runs it, several times, on
the free cores, on one core, and on one core beside a busy loop (another program on the machine).

Each run is the exact command (no option), timed from process start to exit; the table gives held-out
accuracy, epochs, the work before the first training step and the wall time. Run it under
``../shared/tools/slow-cpu --cores 2 -- python benchmarks/demo.py`` to see an AVX2 CPU without native
bf16 from a faster one (the section is then written for that, named so).

    python benchmarks/demo.py [--runs 3] [--modes free one-core busy-core]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run, write_section  # noqa: E402

MODES = {"free": ([], False), "one-core": (["taskset", "-c", "0"], False), "busy-core": (["taskset", "-c", "0"], True)}
LABELS = {"free": "all the cores it is given, nothing else running", "one-core": "one core (taskset -c 0)",
          "busy-core": "one core shared with a busy loop"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args()
    plainnet = str(Path(sys.executable).parent / "plainnet")
    rows: dict[str, list[dict]] = {m: [] for m in args.modes}
    for i in range(args.runs):
        for mode in args.modes:  # interleaved: each round runs every mode once
            pin, busy = MODES[mode]
            with tempfile.TemporaryDirectory(prefix="plainnet-demo-") as cwd:
                hog = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    proc, seconds = run([*pin, plainnet, "demo"], cwd=cwd)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                (folder,) = (Path(cwd) / "runs").iterdir()
                res = json.loads((folder / "results.json").read_text())
            row = {"acc": res["final"]["val"]["acc"], "epochs": res["epochs_run"], "seconds": seconds,
                   "startup": res.get("startup_seconds") or 0.0, "status": res["status"], "code": proc.returncode}
            rows[mode].append(row)
            print(mode, i, row, flush=True)
    lines = ["## demo: `plainnet demo` as the README runs it", "",
             "The whole command (process start to exit), no option: digits, its one-minute budget and its floor "
             "of 5 epochs. Held-out accuracy of each run (the 359 held-out digits), epochs, the work before the "
             "first training step (imports, data, speed probe) and wall time: median (range).", "",
             "| where | runs | held-out accuracy (each run) | epochs | before the first step | wall time | exit |",
             "|---|---|---|---|---|---|---|"]
    for mode, rs in rows.items():
        secs, start = [r["seconds"] for r in rs], [r["startup"] for r in rs]
        accs = ", ".join(f"{r['acc']:.2%}" for r in rs)
        lines.append(f"| {LABELS[mode]} | {len(rs)} | {accs} | "
                     f"{statistics.median(r['epochs'] for r in rs):g} | {statistics.median(start):.1f} s "
                     f"({min(start):.1f}-{max(start):.1f}) | {statistics.median(secs):.0f} s ({min(secs):.0f}-"
                     f"{max(secs):.0f}) | {', '.join(str(r['code']) for r in rs)} |")
    write_section("demo", "\n".join(lines))


if __name__ == "__main__":
    main()
