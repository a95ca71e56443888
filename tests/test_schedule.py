"""The training clock: schedules as functions of progress, re-fitting, progressive resizing, and the time
budget's decisions (with a fake clock: no timed tests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from plainnet.engine.callbacks import TrainingClock
from plainnet.engine.schedule import FIXED_COST, Schedule, mean_cost, step_cost, train_size


def test_schedules_warm_up_peak_and_end_at_their_floor():
    one = Schedule("onecycle", warmup=0.25, min_ratio=0.0, total=100)
    assert one(0) == pytest.approx(1 / 25) and one(25) == pytest.approx(1.0) and one(100) == pytest.approx(0.0)
    assert all(one(i) <= one(i + 1) for i in range(25)) and all(one(i) >= one(i + 1) for i in range(25, 100))
    cos = Schedule("cosine", warmup=0.1, min_ratio=0.05, total=100)
    assert cos(0) == pytest.approx(0.01) and cos(10) == pytest.approx(1.0) and cos(100) == pytest.approx(0.05)
    const = Schedule("constant", warmup=0.1, min_ratio=0.0, total=100)
    assert const(5) == pytest.approx(0.01 + 0.99 * 0.5) and const(99) == 1.0
    with pytest.raises(ValueError):
        Schedule("step", 0.1, 0.0, 10)


def test_a_refit_squeezes_the_rest_of_the_schedule_into_the_new_length():
    s = Schedule("onecycle", warmup=0.25, min_ratio=0.0, total=200)
    before = s(60)
    s.refit(60, 100)  # only 40 of the 140 remaining steps fit
    assert s(60) == pytest.approx(before)  # no jump where it was re-fitted
    assert s.progress(100) == pytest.approx(1.0) and s(100) == pytest.approx(0.0)  # still anneals to the end
    assert s.progress(80) == pytest.approx(s.progress(60) + (1 - s.progress(60)) / 2)
    s.refit(80, 300)  # and stretches when there is more time
    assert s.progress(300) == pytest.approx(1.0) and s(190) > s(300)


def test_progressive_resizing_grows_to_the_full_size_by_three_quarters():
    sizes = [train_size(i / 100, 64, 96) for i in range(101)]
    assert sizes[0] == 64 and sizes[75] == 96 and sizes[-1] == 96
    assert sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert train_size(0.0, 96, 96) == 96 and train_size(0.5, 128, 96) == 96  # off
    assert mean_cost(96, 96) == 1.0
    # linear 64 -> 96 over 3/4 of training, then 96: the mean of (size/96)^2 is 0.778 (up to 8 px steps);
    # a step's time is a fixed part plus a part that follows the pixels
    pixels = 0.75 * (1 - (2 / 3) ** 3) / (3 * (1 / 3)) + 0.25
    assert mean_cost(64, 96) == pytest.approx(FIXED_COST + (1 - FIXED_COST) * pixels, abs=0.02)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _simulate(clock: TrainingClock, fake: _Clock, *, epochs: int, seconds_per_epoch, val_seconds: float = 1.0,
              steps: int = 10):
    """Run a fake trainer through ``clock``'s hooks; an epoch at the full size takes
    ``seconds_per_epoch(epoch)`` seconds, scaled by its size's step cost, and validates (``val_seconds``)
    where Lightning would, reading ``check_val_every_n_epoch`` as its epoch loop does.
    Returns (epochs run, sizes, schedule, trainer); ``trainer.validated`` lists the validated epochs."""
    schedule = Schedule("onecycle", 0.25, 0.0, epochs * steps)
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(max_epochs=epochs), max_epochs=epochs, current_epoch=0,
                              global_step=0, num_training_batches=steps, should_stop=False,
                              datamodule=SimpleNamespace(train_size=None), check_val_every_n_epoch=1, validated=[])
    module = SimpleNamespace(schedule=schedule, train_seconds=None)
    sizes = []
    while trainer.current_epoch < trainer.fit_loop.max_epochs and not trainer.should_stop:
        clock.on_train_epoch_start(trainer, module)
        size = trainer.datamodule.train_size or clock.full_size
        sizes.append(size)
        module.train_seconds = seconds_per_epoch(trainer.current_epoch) * step_cost(size, clock.full_size)
        fake.now += module.train_seconds
        trainer.global_step += steps
        if (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch == 0:
            clock.on_validation_start(trainer, module)
            fake.now += val_seconds
            clock.on_validation_end(trainer, module)
            trainer.validated.append(trainer.current_epoch)
        clock.on_train_epoch_end(trainer, module)
        trainer.current_epoch += 1
    return trainer.current_epoch, sizes, schedule, trainer


def test_without_a_deadline_the_planned_epochs_run_and_the_images_grow():
    fake = _Clock()
    clock = TrainingClock(64, 96, clock=fake)
    run, sizes, schedule, _ = _simulate(clock, fake, epochs=12, seconds_per_epoch=lambda e: 10.0)
    assert run == 12 and sizes[0] == 64 and sizes[-1] == 96 and sizes == sorted(sizes)
    assert schedule.progress(12 * 10) == pytest.approx(1.0) and clock.notes == []


@pytest.mark.parametrize("slow_after", [0, 4])
def test_a_run_slower_than_planned_is_refitted_to_end_by_its_deadline(slow_after):
    # Planned 30 epochs of ~10 s (at the full size) in a 300 s budget; from epoch `slow_after` on, each takes 3x as long
    # (another process, a slower CPU than the probe saw).
    fake = _Clock()
    clock = TrainingClock(64, 96, deadline=300.0, reserve=lambda val: 2 * val + 4, clock=fake)
    run, sizes, schedule, trainer = _simulate(clock, fake, epochs=30,
                                              seconds_per_epoch=lambda e: 30.0 if e >= slow_after else 10.0)
    assert run < 30 and clock.notes and "re-fitted from 30" in clock.notes[0]
    assert fake.now <= 300 - 4 and fake.now >= 300 * 0.8  # ends in time, without giving much away
    assert sizes[-1] == 96 and schedule.progress(trainer.global_step) == pytest.approx(1.0)  # annealed, full size


def test_a_run_faster_than_planned_uses_the_time_it_was_given():
    fake = _Clock()
    clock = TrainingClock(96, 96, deadline=300.0, reserve=lambda val: 2 * val + 4, max_epochs=100, clock=fake)
    run, _, schedule, trainer = _simulate(clock, fake, epochs=10, seconds_per_epoch=lambda e: 5.0)
    assert 10 < run <= 100 and 300 * 0.85 <= fake.now <= 300
    assert schedule.progress(trainer.global_step) == pytest.approx(1.0)


def test_an_epoch_that_fits_is_added_even_when_it_is_the_only_one():
    # Planned 8 epochs of 10 s (+1 s validation) in 112 s: a 9th fits. (A 3-minute potato run planned
    # from an underestimated speed ended at 149 s, 17% early, when only a stretch of two counted.)
    fake = _Clock()
    clock = TrainingClock(96, 96, deadline=112.0, reserve=lambda val: 4.0, tolerance=3.0, clock=fake)
    run, _, schedule, trainer = _simulate(clock, fake, epochs=8, seconds_per_epoch=lambda e: 10.0)
    assert run == 9 and 112 * 0.85 <= fake.now <= 112 - 4
    assert schedule.progress(trainer.global_step) == pytest.approx(1.0)


def test_a_plan_that_overruns_within_the_tolerance_is_kept():
    # 9 epochs of 11 s need 99 s + 4 s after training in a 102 s budget: the estimate (with its 3% margin)
    # overruns by ~4 s. Within a 5 s tolerance the epoch is kept, ending by the deadline; without one
    # it is dropped and the run ends 14% early.
    def run(tolerance):
        fake = _Clock()
        clock = TrainingClock(96, 96, deadline=102.0, reserve=lambda val: 4.0, tolerance=tolerance, clock=fake)
        epochs = _simulate(clock, fake, epochs=9, seconds_per_epoch=lambda e: 10.0)[0]
        return epochs, fake.now

    assert run(5.0) == (9, pytest.approx(99.0)) and run(0.0) == (8, pytest.approx(88.0))


def test_no_time_left_stops_after_the_current_epoch():
    fake = _Clock()
    clock = TrainingClock(96, 96, deadline=5.0, reserve=lambda val: 4.0, clock=fake)
    run, _, _, trainer = _simulate(clock, fake, epochs=8, seconds_per_epoch=lambda e: 3.0)
    assert run == 1 and trainer.should_stop and clock.planned == 1



def test_validation_runs_every_epoch_while_it_is_cheap():
    fake = _Clock()
    clock = TrainingClock(96, 96, val_every=0, clock=fake)
    _, _, _, trainer = _simulate(clock, fake, epochs=6, seconds_per_epoch=lambda e: 10.0, val_seconds=0.9)
    assert trainer.validated == list(range(6)) and clock.val_every == 1 and clock.notes == []


def test_costly_validation_runs_less_often_and_always_after_the_last_epoch():
    # A validation pass costs 35% of an epoch's training: every 4th epoch keeps it under 10%.
    fake = _Clock()
    clock = TrainingClock(96, 96, val_every=0, clock=fake)
    _, _, _, trainer = _simulate(clock, fake, epochs=10, seconds_per_epoch=lambda e: 10.0, val_seconds=3.5)
    assert clock.val_every == 4 and "val_every=4" in clock.notes[0]
    assert trainer.validated == [0, 3, 7, 9]
    # capped: even a pass as long as an epoch is run every 5th epoch; a fixed interval is kept as given
    fake = _Clock()
    clock = TrainingClock(96, 96, val_every=0, clock=fake)
    _simulate(clock, fake, epochs=3, seconds_per_epoch=lambda e: 10.0, val_seconds=30.0)
    assert clock.val_every == 5
    fake = _Clock()
    clock = TrainingClock(96, 96, val_every=3, clock=fake)
    _, _, _, trainer = _simulate(clock, fake, epochs=7, seconds_per_epoch=lambda e: 10.0, val_seconds=0.1)
    assert trainer.validated == [2, 5, 6] and clock.notes == []


def test_a_budget_spends_the_validation_time_it_saves_on_training():
    def run(val_every):
        fake = _Clock()
        clock = TrainingClock(96, 96, deadline=300.0, reserve=lambda val: 2 * val + 4, val_every=val_every,
                              clock=fake)
        epochs, _, _, trainer = _simulate(clock, fake, epochs=10, seconds_per_epoch=lambda e: 10.0, val_seconds=4.0)
        assert fake.now <= 300 and trainer.validated[-1] == epochs - 1
        return epochs

    assert run(None) > run(1)  # 4 s passes every 4th epoch instead of each: ~2 more epochs of 10 s


@pytest.mark.parametrize("slow_after", [2, 5, 9])
def test_a_run_its_budget_stops_early_still_validates_its_last_epoch(slow_after):
    # Validation every 4th epoch; from epoch `slow_after` on, epochs take 5x as long and the deadline
    # comes before the plan's end: the epoch that turns out to be the last is validated anyway.
    fake = _Clock()
    clock = TrainingClock(96, 96, deadline=200.0, reserve=lambda val: 2 * val + 4, val_every=4, clock=fake)
    run, _, _, trainer = _simulate(clock, fake, epochs=16, seconds_per_epoch=lambda e: 50.0 if e >= slow_after else 10.0,
                                   val_seconds=1.0)
    # (a 5x slow-down is re-fitted from the mean of the last three epochs: it may overrun by part of one)
    assert run < 16 and fake.now <= 200 * 1.05
    assert trainer.validated[-1] == run - 1, (run, trainer.validated)


def test_a_refit_never_cuts_below_the_floor():
    # 30 s epochs in a 100 s budget fit 2 of the planned 8; the floor of 5 is kept (a model that learns,
    # past the budget), and the schedule is re-fitted onto those 5 so the run still anneals.
    fake = _Clock()
    clock = TrainingClock(96, 96, deadline=100.0, reserve=lambda val: 4.0, min_epochs=5, clock=fake)
    run, _, schedule, trainer = _simulate(clock, fake, epochs=8, seconds_per_epoch=lambda e: 30.0)
    assert run == 5 and clock.planned == 5 and schedule.progress(trainer.global_step) == pytest.approx(1.0)
    floorless = TrainingClock(96, 96, deadline=100.0, reserve=lambda val: 4.0, clock=(fake := _Clock()))
    assert _simulate(floorless, fake, epochs=8, seconds_per_epoch=lambda e: 30.0)[0] < 5
