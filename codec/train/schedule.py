"""Learning-rate schedule and divergence guard shared by the codec trainers (image and mel).

- :func:`cosine_lr`: constant ``lr`` up to ``decay_start · steps``, then a cosine down to ``lr_min``
  at ``steps``; a closed form of the step, so resuming needs no scheduler state.
- :func:`warmup_factor`: a linear ramp over the first ``warmup`` steps of every start of the
  process (new, resumed or initialised from another checkpoint). A run resumed after the end of
  a decay, whose schedule jumps back to the peak LR, diverged without it.
- :class:`StepGuard`: skips steps whose loss is not finite or spikes far above its running mean, and
  stops the run after too many in a row.
"""

from __future__ import annotations

import math

import torch


class TrainingDivergedError(RuntimeError):
    """The loss stayed non-finite for too many steps in a row; restart from ``best.pt``."""


def cosine_lr(step: int, steps: int, lr: float, lr_min: float, decay_start: float) -> float:
    start = int(decay_start * steps)
    if step < start:
        return lr
    t = min(1.0, (step - start) / max(1, steps - start))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))


def warmup_factor(warmup: int, steps_since_start: int) -> float:
    """LR multiplier ``steps_since_start`` steps after the process started (1 after ``warmup`` steps)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, (steps_since_start + 1) / warmup)


class StepGuard:
    """``ok(loss, step)`` says whether to take a step; raises after ``max_bad`` refused steps in a row.

    A step is refused when its loss is not finite, or (once ``warmup`` steps have been seen) when the
    watched value (the loss, or a part of it that cannot be negative: ``watch``) exceeds ``spike`` times its
    running mean over accepted steps (an exponential mean over about 100 steps). A single wild batch is
    then skipped instead of throwing the weights off, and a run whose loss has really left its range
    stops with :class:`TrainingDivergedError` instead of training on garbage (the block-PCA image pilot
    jumped from a loss of 0.006 to over 1 000 within 50 steps at step ~2 950, with no non-finite value
    to catch).

    An objective that can go negative (RSQ's ELBO adds −entropy terms) must watch its reconstruction
    error: a relative spike of a mean at or below zero means nothing, and the first mel RSQ run was
    stopped at step 424 because every positive loss was "over 20× its running mean −0.0088".
    """

    def __init__(self, max_bad: int, hint: str = "", spike: float = 20.0, warmup: int = 100) -> None:
        self.max_bad, self.hint, self.spike, self.warmup = max_bad, hint, spike, warmup
        self.bad, self.seen, self.mean = 0, 0, 0.0
        self.skipped = 0  # refused steps since this guard was made (logged by the trainers)

    def ok(self, loss: torch.Tensor, step: int, watch: torch.Tensor | None = None) -> bool:
        value = float((loss if watch is None else watch).detach())
        finite = math.isfinite(value) and math.isfinite(float(loss.detach()))
        spiking = (finite and self.seen >= self.warmup and self.spike > 0 and self.mean > 0
                   and value > self.spike * self.mean)
        if finite and not spiking:
            self.bad = 0
            self.seen += 1
            rate = max(0.01, 1.0 / self.seen)
            self.mean += rate * (value - self.mean)
            return True
        self.bad += 1
        self.skipped += 1
        if self.bad >= self.max_bad:
            what = "not finite" if not finite else f"over {self.spike:g}× its running mean {self.mean:.3g}"
            raise TrainingDivergedError(f"loss {what} for {self.bad} steps in a row at step {step}; {self.hint}")
        return False


__all__ = ["StepGuard", "TrainingDivergedError", "cosine_lr", "warmup_factor"]
