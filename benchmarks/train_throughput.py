"""Training throughput: plainnet's pipeline vs a tutorial-style PyTorch loop, same data, model, size.

The tutorial loop is the usual hand-written one: torchvision ``ImageFolder`` + PIL transforms per image
per epoch + ``DataLoader`` + fp32 + Adam. plainnet's is ``plainnet.train`` itself (decode-once cache,
batched augmentation, bf16 autocast where the CPU has it, channels_last, SGD). Both train RepVGG-A0 at
the same resolution on the same training split for one full epoch, timed from the first batch to the
last optimizer step; rounds are interleaved and medians reported.

    python benchmarks/train_throughput.py [--data ../shared/datasets/potato] [--size 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, median_spread, write_section  # noqa: E402


def tutorial_epoch(split: dict, root: Path, size: int, batch: int, workers: int) -> float:
    """One epoch of the hand-written loop over the training split; returns images/s."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    import plainnet

    tf = transforms.Compose([
        transforms.Resize(round(size / 0.875)), transforms.RandomCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    folder = datasets.ImageFolder(str(root), transform=tf)
    index = {Path(p).resolve(): i for i, (p, _) in enumerate(folder.samples)}
    train_idx = [index[(root / rel).resolve()] for rel, _ in split["train"]]
    loader = DataLoader(Subset(folder, train_idx), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True)
    model = plainnet.create_model("repvgg_a0", num_classes=len(folder.classes)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def plainnet_epoch(data: Path, size: int, runs: Path, name: str) -> tuple[float, dict]:
    """One epoch of ``plainnet.train`` (training part of the epoch); returns images/s and the split."""
    import plainnet

    result = plainnet.train(data=str(data), model="repvgg_a0", epochs=1, overrides={
        "data.image_size": str(size), "train.progress": "false", "train.runs_dir": str(runs), "train.name": name})
    row = next(csv.DictReader((result.run_dir / "metrics.csv").open()))
    return float(row["train/img_s"]), json.loads((result.run_dir / "split.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "potato")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    runs = Path(tempfile.mkdtemp(prefix="plainnet-bench-"))
    _, split = plainnet_epoch(args.data, args.size, runs, "warmup")  # builds the decode cache once
    results: dict[str, list[float]] = {"tutorial loop (fp32, PIL, 0 workers)": [],
                                       "tutorial loop (fp32, PIL, 2 workers)": [], "plainnet train": []}
    for r in range(args.rounds):
        results["tutorial loop (fp32, PIL, 0 workers)"].append(tutorial_epoch(split, args.data, args.size, args.batch, 0))
        results["tutorial loop (fp32, PIL, 2 workers)"].append(tutorial_epoch(split, args.data, args.size, args.batch, 2))
        results["plainnet train"].append(plainnet_epoch(args.data, args.size, runs, f"round{r}")[0])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in results.items()), flush=True)

    import statistics

    best_tutorial = max(statistics.median(v) for k, v in results.items() if k.startswith("tutorial"))
    lines = [
        f"## Training throughput: plainnet vs a tutorial-style loop ({args.data.name}, repvgg_a0, {args.size} px)",
        "",
        f"One full training epoch ({len(split['train'])} images, batch {args.batch}), timed from the first batch "
        "to the last step; "
        f"{args.rounds} interleaved rounds, median (min-max). Ratio against the faster tutorial variant.",
        "",
        "| pipeline | images/s | ratio |",
        "|---|---|---|",
    ]
    for k, v in results.items():
        lines.append(f"| {k} | {median_spread(v)} | {statistics.median(v) / best_tutorial:.2f}x |")
    write_section("train_throughput", "\n".join(lines))


if __name__ == "__main__":
    main()
