"""Did the run learn? The verdict on a finished training run, before it is called "finished".

A time budget, a learning rate set by hand or a broken dataset can end a run with a model that answers
no better than always naming the largest class. Such a run must not look like a success: its status is
``did_not_learn``, with the likely cause and the fix in one line, and the CLI exits non-zero. Lesser
problems -- a model far worse on held-out images than on its own training images, a budget that cut
most of the planned epochs -- are warnings that the run keeps and the CLI shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Verdict", "assess", "LEARNED_MARGIN"]

#: A run learned when its held-out accuracy beats always answering the largest class by at least this
#: share of the distance to 100% (10 balanced classes: 10% -> at least 19%; 93% -> at least 93.7%).
LEARNED_MARGIN = 0.1
#: Training accuracy this far above the held-out accuracy is worth a warning (overfitting, or held-out
#: images unlike the training ones).
GAP_WARNING = 0.25


@dataclass(frozen=True)
class Verdict:
    status: str  # "finished" or "did_not_learn"
    #: One line: what went wrong, the likely cause and the fix (empty when the run learned).
    problem: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _loss_fell(history: list[dict]) -> bool:
    losses = [h["train/loss"] for h in history if h.get("train/loss") is not None]
    return len(losses) >= 2 and min(losses[1:]) < losses[0] * 0.95


def assess(acc: float | None, largest_share: float | None, history: list[dict], *, epochs_planned: int,
           lr: float, lr_by_hand: bool, floor: int) -> Verdict:
    """The verdict on a run whose best weights scored ``acc`` on the held-out split, where always
    answering its largest class scores ``largest_share``.

    Args:
        history: the per-epoch rows (``train/loss``, ``train/acc``, ``val/acc``...).
        epochs_planned: the epochs planned before training (a budget re-fit may have run fewer).
        lr, lr_by_hand: the peak learning rate, and whether the user set it (not the recipe).
        floor: the fewest epochs the recipe plans for a run that learns.
    """
    warnings = []
    run = len(history)
    if epochs_planned and run < epochs_planned / 2:
        warnings.append(f"the time budget cut the run to {run} of the {epochs_planned} planned epochs; a longer "
                        "--train.budget_minutes would train the rest")
    train_acc = next((h["train/acc"] for h in reversed(history) if h.get("train/acc") is not None), None)
    if acc is not None and train_acc is not None and train_acc - acc > GAP_WARNING:
        warnings.append(f"held-out accuracy {acc:.1%} is far below the training accuracy {train_acc:.1%}: the "
                        "model memorised its training images (more data, stronger --augment.preset, fewer "
                        "epochs) or the held-out images differ from them")
    if acc is None or largest_share is None:
        return Verdict("finished", "", tuple(warnings))
    learned = acc >= largest_share + LEARNED_MARGIN * (1 - largest_share) or (acc >= 0.999)
    if learned:
        return Verdict("finished", "", tuple(warnings))
    what = (f"the model did not learn: held-out accuracy {acc:.1%} is no better than always answering the largest "
            f"class ({largest_share:.1%})")
    if lr_by_hand and run >= 2 and not _loss_fell(history):
        cause = (f"the training loss never fell at --optim.lr {lr:g}: leave the learning rate to the recipe (drop "
                 "--optim.lr) or set one nearer its choice")
    elif run < max(floor, 3):  # (too few epochs to tell a loss that does not fall)
        cause = (f"only {run} epoch(s) ran, fewer than the {floor} a run needs to learn: give a longer "
                 "--train.budget_minutes or --epochs")
    elif not _loss_fell(history):
        cause = ("the training loss never fell: check that the class folders hold the right images, or try "
                 "another --optim.lr or more --epochs")
    else:
        cause = ("the training loss fell but held-out images are still guessed: train longer (--epochs, "
                 "--train.budget_minutes), or check that training and held-out images are alike")
    return Verdict("did_not_learn", f"{what}; {cause}", tuple(warnings))
