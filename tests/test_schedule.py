"""The training guard and schedule shared by the codec trainers (codec/train/schedule.py)."""

import math

import pytest

torch = pytest.importorskip("torch")
from strata.train.schedule import StepGuard, TrainingDivergedError, cosine_lr, warmup_factor  # noqa: E402


def feed(guard: StepGuard, values, start: int = 0) -> list[bool]:
    return [guard.ok(torch.tensor(v), start + i) for i, v in enumerate(values)]


def test_accepts_a_noisy_but_steady_loss():
    guard = StepGuard(max_bad=5, warmup=10)
    assert all(feed(guard, [0.01 * (1 + 0.5 * math.sin(i)) for i in range(300)]))


def test_skips_non_finite_and_spiking_steps_then_recovers():
    guard = StepGuard(max_bad=5, warmup=10)
    feed(guard, [0.01] * 50)
    assert feed(guard, [float("nan"), float("inf"), 5.0, 0.011], 50) == [False, False, False, True]
    assert guard.bad == 0 and guard.skipped == 3  # the run of refusals ended; the count of them stays
    feed(guard, [9.0, 0.01], 54)
    assert guard.skipped == 4


def test_no_spike_check_during_warmup():
    guard = StepGuard(max_bad=3, warmup=10)
    assert all(feed(guard, [1.0, 100.0, 0.5]))  # early losses swing widely


def test_a_run_that_left_its_range_stops():
    guard = StepGuard(max_bad=4, warmup=10, hint="restart from best.pt")
    feed(guard, [0.006] * 200)
    with pytest.raises(TrainingDivergedError, match="over 20× its running mean.*restart from best.pt"):
        feed(guard, [210.0] * 4, 200)


def test_non_finite_run_stops():
    guard = StepGuard(max_bad=3)
    with pytest.raises(TrainingDivergedError, match="not finite"):
        feed(guard, [float("nan")] * 3)


def test_schedule_shapes():
    assert cosine_lr(0, 100, 1e-3, 1e-5, 0.5) == cosine_lr(50, 100, 1e-3, 1e-5, 0.5) == 1e-3
    assert abs(cosine_lr(100, 100, 1e-3, 1e-5, 0.5) - 1e-5) < 1e-12
    assert warmup_factor(500, 0) == 1 / 500 and warmup_factor(500, 499) == 1.0 and warmup_factor(0, 0) == 1.0


def test_a_loss_that_goes_negative_is_watched_through_its_positive_part() -> None:
    """RSQ's ELBO term can make the loss negative: the guard watches the reconstruction error instead, and a
    non-positive running mean never makes an ordinary step look like a spike."""
    guard = StepGuard(max_bad=3, warmup=5)
    for step in range(50):  # loss negative, reconstruction error positive and steady
        assert guard.ok(torch.tensor(-0.01 + 0.001 * (step % 3)), step, watch=torch.tensor(0.004))
    assert not guard.ok(torch.tensor(0.5), 50, watch=torch.tensor(0.5))  # a real spike of the error is refused
    unwatched = StepGuard(max_bad=3, warmup=5)  # a running mean at or below zero flags nothing
    assert all(unwatched.ok(torch.tensor(v), i) for i, v in enumerate([-0.01] * 10 + [0.02]))
    with pytest.raises(TrainingDivergedError, match="not finite"):
        feed(StepGuard(max_bad=2, warmup=5), [0.1] * 10 + [float("nan")] * 2)
