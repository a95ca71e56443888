"""plainnet beside the practitioner's tools, same CPU, same wall-clock budget, one scorer.

Each tool trains from scratch on the same training images with the same budget, carving its validation
images from them as it does by default (20%); every tool's model then predicts the same held-out images
(potato: a stratified 20% none of them trained on; CIFAR-10 subset: its test folder; Imagenette subset:
its val folder) and this script scores all of them alike.

- plainnet: the default command, ``plainnet train --data TRAIN --train.budget_minutes B``.
- Ultralytics YOLO classify: ``yolo11n-cls.yaml`` from scratch, ``imgsz`` as plainnet's photos (96 px)
  or the images' size (32 px CIFAR), ``time=B/60`` hours, ``device=cpu``, offline
  (``YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False``).
- fastai: ``vision_learner(dls, resnet18, pretrained=False)`` (a small CNN, 11.7M parameters beside
  RepVGG-A0's 8.3M), ``fit_one_cycle`` for as many epochs as the budget fits (one timed epoch first,
  counted in its time), its default ``aug_transforms``.

The peers are benchmark-only installs, never plainnet dependencies (Ultralytics is AGPL)::

    python benchmarks/peers.py setup            # .venv-peers: torch, plainnet, ultralytics, fastai
    .venv-peers/bin/python benchmarks/peers.py run [--data potato cifar10 imagenette] [--seeds 3]
                                                   [--budget 5] [--tools plainnet yolo fastai]
    .venv-peers/bin/python benchmarks/peers.py rescore WORK   # the table again from a run's work folder

Time to accuracy: from each run's own per-epoch validation accuracy (on its carved 20%) and the time
since the command started, the first moment it reaches the dataset's target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, write_section  # noqa: E402

PEERS_VENV = ROOT / ".venv-peers"
#: Held-out accuracy each tool is timed to (issue: potato 99%, CIFAR subset 70%, Imagenette subset 50%).
TARGETS = {"potato": 0.99, "cifar10": 0.70, "imagenette": 0.50}
#: Image side the peers train at: plainnet's automatic size for photos on a CPU, CIFAR's own.
SIZES = {"potato": 96, "cifar10": 32, "imagenette": 96}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- data


def _images(folder: Path) -> dict[str, list[Path]]:
    return {c.name: sorted(p for p in c.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for c in sorted(folder.iterdir()) if c.is_dir()}


def _link(files: dict[str, list[Path]], out: Path) -> Path:
    for cls, paths in files.items():
        (out / cls).mkdir(parents=True, exist_ok=True)
        for p in paths:
            (out / cls / p.name).symlink_to(p.resolve())
    return out


def _split(files: dict[str, list[Path]], fraction: float, seed: int):
    """Stratified: (the rest, ``fraction`` of each class)."""
    rng, rest, part = random.Random(seed), {}, {}
    for cls, paths in files.items():
        shuffled = paths[:]
        rng.shuffle(shuffled)
        k = round(len(shuffled) * fraction)
        part[cls], rest[cls] = shuffled[:k], shuffled[k:]
    return rest, part


def prepare(data: str, work: Path) -> dict[str, Path]:
    """``train`` (what every tool trains on), ``held_out`` (what every tool is scored on) and ``yolo``
    (train split into train/ and val/ folders, the layout Ultralytics needs)."""
    root = SHARED / data
    if data == "potato":
        train, held = _split(_images(root), 0.2, seed=0)
    else:
        train, held = _images(root / "train"), _images(root / ("test" if data == "cifar10" else "val"))
    out = work / data
    fit, val = _split(train, 0.2, seed=1)
    _link(fit, out / "yolo" / "train")
    _link(val, out / "yolo" / "val")
    return {"train": _link(train, out / "train"), "held_out": _link(held, out / "held_out"), "yolo": out / "yolo"}


def _truth(held_out: Path) -> dict[str, str]:
    return {str(p): cls for cls, paths in _images(held_out).items() for p in paths}


# ----------------------------------------------------------------------------- the tools


def _timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])}... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def run_plainnet(paths: dict, data: str, seed: int, budget: float, out: Path) -> dict:
    plainnet = str(Path(sys.executable).parent / "plainnet")
    seconds = _timed([plainnet, "train", "--data", str(paths["train"]), "--runs-dir", str(out), "--name", "run",
                      "--train.progress", "false", "--train.budget_minutes", f"{budget:g}", "--train.seed", str(seed)])
    with open(out / "pred.json", "w") as f:
        subprocess.run([plainnet, "predict", str(out / "run"), str(paths["held_out"]), "--format", "json"], stdout=f,
                       check=True)
    (out / "seconds").write_text(str(seconds))
    return collect_plainnet(out)


def collect_plainnet(out: Path) -> dict:
    """A finished plainnet run's predictions, curve (time since the command started, validation
    accuracy) and epochs."""
    import csv

    records = json.loads((out / "pred.json").read_text())["predictions"]
    predictions = {r["path"]: r["top_k"][0]["class"] for r in records if r.get("ok")}
    results = json.loads((out / "run" / "results.json").read_text())
    curve, t = [], float(results.get("startup_seconds") or 0.0)
    with open(out / "run" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            t += float(row.get("train/epoch_time") or 0.0)
            if row.get("val/acc"):
                curve.append((t, float(row["val/acc"])))
    return {"seconds": float((out / "seconds").read_text()), "predictions": predictions, "curve": curve,
            "epochs": results["epochs_run"]}


def run_yolo(paths: dict, data: str, seed: int, budget: float, out: Path) -> dict:
    seconds = _timed([sys.executable, __file__, "_yolo_train", str(paths["yolo"]), str(out), str(SIZES[data]),
                      str(seed), f"{budget:g}"], YOLO_ENV)
    (out / "seconds").write_text(str(seconds))
    _timed([sys.executable, __file__, "_yolo_predict", str(out), str(paths["held_out"]), str(SIZES[data])], YOLO_ENV)
    return collect_peer(out)


def run_fastai(paths: dict, data: str, seed: int, budget: float, out: Path) -> dict:
    seconds = _timed([sys.executable, __file__, "_fastai_train", str(paths["train"]), str(out), str(SIZES[data]),
                      str(seed), f"{budget:g}"])
    (out / "seconds").write_text(str(seconds))
    _timed([sys.executable, __file__, "_fastai_predict", str(out), str(paths["held_out"])])
    return collect_peer(out)


def collect_peer(out: Path) -> dict:
    return {"seconds": float((out / "seconds").read_text()), **json.loads((out / "peer.json").read_text())}


TOOLS = {"plainnet": run_plainnet, "yolo": run_yolo, "fastai": run_fastai}
COLLECT = {"plainnet": collect_plainnet, "yolo": collect_peer, "fastai": collect_peer}
YOLO_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


def _yolo_train(data_dir: str, out: str, size: str, seed: str, budget: str) -> None:
    import csv

    from ultralytics import YOLO

    started = time.perf_counter()
    model = YOLO("yolo11n-cls.yaml")
    model.train(data=data_dir, imgsz=int(size), device="cpu", time=float(budget) / 60, pretrained=False,
                seed=int(seed), project=out, name="yolo", exist_ok=True, plots=False, verbose=False)
    results = Path(out) / "yolo" / "results.csv"
    curve = []
    with open(results) as f:
        for row in csv.DictReader(f):
            row = {k.strip(): v for k, v in row.items()}
            if row.get("time") and row.get("metrics/accuracy_top1"):
                curve.append((float(row["time"]), float(row["metrics/accuracy_top1"])))
    # Its "time" column counts from its own training start: shift it to this process's start.
    offset = time.perf_counter() - started - curve[-1][0] if curve else 0.0
    curve = [(t + max(offset, 0.0), acc) for t, acc in curve]
    Path(out, "curve.json").write_text(json.dumps({"curve": curve, "epochs": len(curve)}))


def _yolo_predict(out: str, held_out: str, size: str) -> None:
    from ultralytics import YOLO

    weights = Path(out) / "yolo" / "weights"
    model = YOLO(str(weights / "best.pt" if (weights / "best.pt").exists() else weights / "last.pt"))
    # Class i is the i-th training folder in sorted order (its own names turn ImageNet's wnid folders,
    # as Imagenette's, into words, so they are not used).
    classes = sorted(c.name for c in Path(held_out).iterdir() if c.is_dir())
    predictions = {}
    files = sorted(str(p) for p in Path(held_out).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for i in range(0, len(files), 64):
        for r in model.predict(files[i : i + 64], imgsz=int(size), device="cpu", verbose=False):
            predictions[r.path] = classes[int(r.probs.top1)]
    info = json.loads(Path(out, "curve.json").read_text())
    Path(out, "peer.json").write_text(json.dumps({"predictions": predictions, **info}))


def _fastai_dls(train: str, size: int, seed: int):
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms

    return ImageDataLoaders.from_folder(train, valid_pct=0.2, seed=seed, item_tfms=Resize(size),
                                        batch_tfms=aug_transforms(), bs=64, num_workers=0)


def _fastai_train(train: str, out: str, size: str, seed: str, budget: str) -> None:
    from fastai.callback.core import Callback
    from fastai.vision.all import accuracy, resnet18, set_seed, vision_learner

    started, deadline = time.perf_counter(), time.perf_counter() + float(budget) * 60
    set_seed(int(seed), reproducible=False)
    dls = _fastai_dls(train, int(size), int(seed))
    probe = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    t = time.perf_counter()
    probe.fit_one_cycle(1)  # one timed epoch: how many fit (its time counts against the budget)
    epoch = time.perf_counter() - t
    epochs = max(1, int((deadline - time.perf_counter()) / epoch))
    ends = []

    class EpochEnds(Callback):
        def after_epoch(self):
            ends.append(time.perf_counter() - started)

    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, cbs=[EpochEnds()])
    learn.fit_one_cycle(epochs)
    curve = [(t, float(values[-1])) for t, values in zip(ends, learn.recorder.values)]  # (its accuracy metric)
    learn.export(Path(out).resolve() / "learner.pkl")
    Path(out, "curve.json").write_text(json.dumps({"curve": curve, "epochs": epochs + 1}))


def _fastai_predict(out: str, held_out: str) -> None:
    from fastai.vision.all import load_learner

    learn = load_learner(Path(out) / "learner.pkl")  # (our own file, written above)
    files = sorted(p for p in Path(held_out).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    dl = learn.dls.test_dl(files, num_workers=0)
    probs, _ = learn.get_preds(dl=dl)
    vocab = learn.dls.vocab
    predictions = {str(p): vocab[int(i)] for p, i in zip(files, probs.argmax(1))}
    info = json.loads(Path(out, "curve.json").read_text())
    Path(out, "peer.json").write_text(json.dumps({"predictions": predictions, **info}))


# ----------------------------------------------------------------------------- the table


def _time_to(curve: list, target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def _mean_spread(values: list[float], fmt=lambda v: f"{v:.2%}") -> str:
    if len(values) == 1:
        return fmt(values[0])
    spread = (max(values) - min(values)) / 2
    return f"{fmt(statistics.mean(values))} ± {fmt(spread)}"


def table(results: dict, budget: float, seeds: int) -> str:
    lines = [f"## Peers: plainnet, Ultralytics YOLO classify and fastai, {budget:g}-minute budget, {seeds} seed(s)",
             "",
             "Each tool from scratch on the same training images and the same wall-clock budget; held-out accuracy "
             "by one scorer on images none of them trained on (potato: a stratified 20%; CIFAR-10 subset: its 10k "
             "test images; Imagenette subset: its 500 val images). Time: the whole training command, process start "
             "to exit. Time to target: when its own per-epoch validation accuracy first reached it ('-': never), "
             "median of the seeds that did.",
             "",
             "| data | tool | held-out accuracy (mean ± half-range) | each seed | epochs | command time | time to target |",
             "|---|---|---|---|---|---|---|"]
    for (data, tool), runs in results.items():
        accs = [r["acc"] for r in runs]
        reached = [t for t in (_time_to(r["curve"], TARGETS[data]) for r in runs) if t is not None]
        to_target = (f"{statistics.median(reached):.0f} s ({len(reached)}/{len(runs)})" if reached else "-")
        lines.append(f"| {data} | {tool} | {_mean_spread(accs)} | {', '.join(f'{a:.1%}' for a in accs)} | "
                     f"{', '.join(str(r['epochs']) for r in runs)} | "
                     f"{statistics.median(r['seconds'] for r in runs):.0f} s | {TARGETS[data]:.0%}: {to_target} |")
    return "\n".join(lines)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for pkg in ("plainnet", "torch", "ultralytics", "fastai"):
        try:
            found.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a tool's own process
        globals()[sys.argv[1]](*sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    r = sub.add_parser("run")
    r.add_argument("--data", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    r.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--budget", type=float, default=5.0)
    r.add_argument("--section", default="peers")
    rs = sub.add_parser("rescore")
    rs.add_argument("work", help="the work folder a run printed")
    rs.add_argument("--budget", type=float, default=5.0)
    rs.add_argument("--section", default="peers")
    args = ap.parse_args()
    if args.cmd == "setup":
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.14.1", "torchvision==0.29.1"], check=True)
        subprocess.run([*pip, "-e", str(ROOT), "ultralytics", "fastai"], check=True)
        return
    if args.cmd == "rescore":  # the table again from a finished run's folder (one scorer, nothing retrained)
        work, results = Path(args.work), {}
        for out in sorted(p for p in work.iterdir() if p.is_dir() and p.name.count("-") == 2):
            data, tool, seed = out.name.split("-")
            results.setdefault((data, tool), []).append(_score(COLLECT[tool](out), work / data / "held_out"))
        _report(results, args.budget, max(len(v) for v in results.values()), args.section)
        return
    work = Path(tempfile.mkdtemp(prefix="plainnet-peers-"))
    print(f"work folder {work} (python benchmarks/peers.py rescore {work} rebuilds the table)", flush=True)
    results: dict[tuple, list[dict]] = {}
    for data in args.data:
        paths = prepare(data, work)
        for seed in range(args.seeds):
            for tool in args.tools:  # interleaved: every tool once per seed
                out = work / f"{data}-{tool}-{seed}"
                out.mkdir()
                run = _score(TOOLS[tool](paths, data, seed, args.budget, out), paths["held_out"])
                results.setdefault((data, tool), []).append(run)
                print(f"{data} {tool} seed {seed}: {run['acc']:.2%} held-out, {run['seconds']:.0f} s, "
                      f"{run['epochs']} epochs", flush=True)
    _report(results, args.budget, args.seeds, args.section)


def _score(run: dict, held_out: Path) -> dict:
    """``run`` with ``acc``: the share of the held-out images whose predicted class is their folder's."""
    truth = _truth(held_out)
    return {**run, "acc": sum(run["predictions"].get(p) == cls for p, cls in truth.items()) / len(truth)}


def _report(results: dict, budget: float, seeds: int, section: str) -> None:
    body = table(results, budget, seeds) + f"\n\nVersions: {_versions()}."
    print(body)
    write_section(section, body)


if __name__ == "__main__":
    main()
