"""A run that did not learn is not "finished": the verdict, and what the train command does with it."""

from __future__ import annotations

import json

from _util import run_cli
from plainnet.engine.verdict import assess

FLAT = [{"epoch": e, "train/loss": 2.30, "train/acc": 0.1} for e in range(4)]
FALLING = [{"epoch": e, "train/loss": 2.3 / (e + 1), "train/acc": 0.2 * (e + 1)} for e in range(4)]


def test_chance_accuracy_did_not_learn_and_the_cause_follows_the_run():
    common = {"epochs_planned": 0, "lr": 1e-9, "floor": 3}
    by_hand = assess(0.1003, 0.1031, FLAT, lr_by_hand=True, **common)
    assert by_hand.status == "did_not_learn" and "--optim.lr 1e-09" in by_hand.problem
    assert "no better than always answering the largest class (10.3%)" in by_hand.problem
    cut = assess(0.1003, 0.1031, FALLING[:1], lr_by_hand=False, **common)
    assert cut.status == "did_not_learn" and "only 1 epoch(s) ran" in cut.problem
    flat = assess(0.1003, 0.1031, FLAT, lr_by_hand=False, **common)
    assert "loss never fell" in flat.problem and "class folders" in flat.problem


def test_a_model_that_beats_the_largest_class_learned():
    # 3 classes, the largest 46.5%: 60% clears the bar (46.5% + a tenth of the way to 100%); 50% does not
    assert assess(0.60, 0.465, FALLING, epochs_planned=0, lr=0.1, lr_by_hand=False, floor=3).status == "finished"
    assert assess(0.50, 0.465, FALLING, epochs_planned=0, lr=0.1, lr_by_hand=False, floor=3).status == "did_not_learn"
    assert assess(1.0, 1.0, FALLING, epochs_planned=0, lr=0.1, lr_by_hand=False, floor=3).status == "finished"


def test_lesser_problems_are_warnings():
    overfit = [{"epoch": 0, "train/loss": 1.0, "train/acc": 0.99}]
    v = assess(0.62, 0.34, overfit, epochs_planned=10, lr=0.1, lr_by_hand=False, floor=1)
    assert v.status == "finished" and len(v.warnings) == 2
    assert "1 of the 10 planned epochs" in v.warnings[0] and "far below the training accuracy" in v.warnings[1]


def test_a_run_that_did_not_learn_exits_non_zero_with_one_line(tmp_path):
    proc = run_cli("train", "--data", "digits", "--epochs", "3", "--optim.lr", "1e-9", "--data.image_size", "8",
                   "--train.precision", "fp32", "--train.progress", "false", "--runs-dir", tmp_path, "--name", "flat")
    assert proc.code == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did not learn" in errors[0] and "--optim.lr" in errors[0]
    results = json.loads((tmp_path / "flat" / "results.json").read_text())
    assert results["status"] == "did_not_learn" and "did not learn" in results["problem"]
    # the run is kept as it is (its curves and weights tell what happened)
    assert (tmp_path / "flat" / "best.pt").is_file() and (tmp_path / "flat" / "metrics.csv").is_file()
