"""Learning-rate schedule and divergence guard shared by the codec trainers (image and mel).

- :func:`cosine_lr`: constant ``lr`` up to ``decay_start · steps``, then a cosine down to ``lr_min``
  at ``steps``; a closed form of the step, so resuming needs no scheduler state.
- :func:`warmup_factor`: a linear ramp over the first ``warmup`` steps of every start of the
  process (new, resumed or initialised from another checkpoint). A run resumed after the end of
  a decay, whose schedule jumps back to the peak LR, diverged without it.
- :class:`StepGuard`: skips steps whose loss is not finite and stops the run after too many in a row.
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
    """``ok(loss)`` is False for a non-finite loss (skip the step); raises after ``max_bad`` in a row."""

    def __init__(self, max_bad: int, hint: str = "") -> None:
        self.max_bad, self.hint, self.bad = max_bad, hint, 0

    def ok(self, loss: torch.Tensor, step: int) -> bool:
        if torch.isfinite(loss):
            self.bad = 0
            return True
        self.bad += 1
        if self.bad >= self.max_bad:
            raise TrainingDivergedError(f"loss not finite for {self.bad} steps in a row at step {step}; {self.hint}")
        return False


__all__ = ["StepGuard", "TrainingDivergedError", "cosine_lr", "warmup_factor"]
