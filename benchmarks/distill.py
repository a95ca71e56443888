"""Does knowledge distillation help a small student here? Students trained alone and with KD from the
same teacher, over several seeds, scored on potato leaves that no model saw.

    python benchmarks/distill.py [--seeds 3]

Setting: potato leaves at 48 px (the test suite's scale, so each run takes seconds). The teacher is
RepVGG-A0 trained on the first 60 images per class (48 train / 12 val); every student is scored on
images 100-199 of each class (252 leaves: the healthy class has 152 images). Students use the default
recipe with label smoothing off (the teacher's soft targets replace it), fp32, and differ only in
``distill.teacher``; KD uses plainnet's defaults (T=2, alpha=0.7) unless the row says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write_section  # noqa: E402

COMMON = {"train.progress": "false", "train.precision": "fp32", "data.image_size": "48",
          "model.output_stride": "16", "augment.preset": "rot"}


def subset(root: Path, start: int, stop: int) -> Path:
    for cls in sorted((SHARED / "potato").iterdir()):
        folder = root / cls.name
        folder.mkdir(parents=True)
        for f in sorted(cls.iterdir())[start:stop]:
            (folder / f.name).symlink_to(f)
    return root


def score(run_dir: Path, files: list[tuple[Path, int]]) -> float:
    from plainnet.evaluation.inference import load_inference_model, read_image

    model = load_inference_model(run_dir)
    x = model.prepare(torch.stack([read_image(f, model.preprocess) for f, _ in files]))
    y = torch.tensor([label for _, label in files])
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 128]) for i in range(0, len(x), 128)]).argmax(1)
    return (pred == y).float().mean().item()


def student(kind: str, num_classes: int = 3):
    """A fresh student: RepVGG-A0, or A0 with a fraction of its channels removed (as compress builds it)."""
    import plainnet
    from plainnet.compress.prune import structured_prune

    model = plainnet.create_model("repvgg_a0", num_classes=num_classes, output_stride=16)
    if kind != "a0":
        structured_prune(model, float(kind), torch.randn(2, 3, 48, 48))
        for m in model.modules():  # a fresh student: the pruned architecture, re-initialized
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    return model


def main() -> None:
    import plainnet

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="plainnet-kd-"))
    runs = tmp / "runs"
    classes = sorted(p.name for p in (SHARED / "potato").iterdir())
    unseen = [(f, i) for i, c in enumerate(classes) for f in sorted((SHARED / "potato" / c).iterdir())[100:200]]
    teacher_data = subset(tmp / "p60", 0, 60)
    other_data = subset(tmp / "p60-80", 60, 80)
    teachers = {}
    for ls in ("0.1", "0.0"):
        result = plainnet.train(data=str(teacher_data), model="repvgg_a0", epochs=10, overrides={
            **COMMON, "train.runs_dir": str(runs), "train.name": f"teacher-ls{ls}", "train.label_smoothing": ls})
        teachers[ls] = (result.run_dir, score(result.run_dir, unseen))
        print(f"teacher (label smoothing {ls}): {teachers[ls][1]:.1%} on the unseen leaves", flush=True)

    settings = [
        ("A0 on 20 other images per class (60), teacher never saw them", other_data, "a0", "0.1", {}),
        ("A0 with 50% of channels on the teacher's images", teacher_data, "0.5", "0.1", {}),
        ("A0 with 50% of channels, teacher without label smoothing, T=4", teacher_data, "0.5", "0.0",
         {"distill.temperature": "4"}),
    ]
    rows = []
    for label, data, kind, ls, extra in settings:
        acc = {"alone": [], "KD": []}
        for seed in range(args.seeds):
            for mode in acc:
                overrides = {**COMMON, "train.runs_dir": str(runs), "train.seed": str(seed),
                             "train.name": f"{len(rows)}-{mode}-{seed}", "train.label_smoothing": "0.0"}
                if mode == "KD":
                    overrides.update({"distill.teacher": str(teachers[ls][0]), **extra})
                torch.manual_seed(seed)  # both students of a seed start from the same weights
                result = plainnet.train(data=str(data), epochs=10, model_instance=student(kind), overrides=overrides)
                acc[mode].append(score(result.run_dir, unseen))
        a, k = acc["alone"], acc["KD"]
        gain = statistics.mean(k) - statistics.mean(a)
        wins = sum(x > y for x, y in zip(k, a))
        rows.append(f"| {label} | {teachers[ls][1]:.1%} | {statistics.mean(a):.1%} ± {statistics.stdev(a):.1%} | "
                    f"{statistics.mean(k):.1%} ± {statistics.stdev(k):.1%} | {gain:+.1%} | {wins}/{args.seeds} |")
        print(rows[-1], flush=True)
    lines = [
        "## Knowledge distillation: when does it help a student here?",
        "",
        f"Students trained alone and with KD from the same teacher, {args.seeds} seeds each (mean ± standard "
        "deviation over seeds), scored on 252 potato leaves no model saw; 48 px, 10 epochs, fp32. "
        "\"KD wins\": seeds where the distilled student beat the same seed trained alone.",
        "",
        "| student | teacher on unseen | alone | with KD | KD gain | KD wins |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    write_section("distill", "\n".join(lines))


if __name__ == "__main__":
    main()
