"""The training budget: how many passes and optimizer steps a fit gets (train.budget), and at what rate.

Like-for-like comparisons across batch sizes need the budget held equal in the unit that matters:
    epochs   every batch size gets train.epochs passes (steps = epochs x batches per epoch);
    steps    every batch size gets train.steps optimizer steps;
    samples  every batch size sees train.samples training samples (steps = ceil(samples / batch_size)).
Under steps and samples the fit runs ceil(steps / batches per epoch) passes, the last one cut short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cryptonorm.config import TrainConfig


@dataclass(frozen=True)
class Budget:
    """A fit's plan: passes, optimizer steps in all (the cosine schedule's length) and the base rate."""

    epochs: int  # passes over the training samples (the last may be partial)
    total_steps: int  # optimizer steps in all
    n_batches: int  # batches in a full pass
    lr: float  # train.lr scaled by train.lr_scaling

    def batches_in(self, epoch: int) -> int:
        """Batches of pass `epoch` (1-based): full passes, then what is left of the step budget."""
        return max(0, min(self.n_batches, self.total_steps - (epoch - 1) * self.n_batches))


def plan(t: TrainConfig, n_batches: int) -> Budget:
    """The budget of a fit with `n_batches` batches per pass."""
    if t.budget == "epochs":
        steps = t.epochs * n_batches
    elif t.budget == "steps":
        steps = int(t.steps or 0)
    else:
        steps = math.ceil(int(t.samples or 0) / t.batch_size)
    return Budget(epochs=max(1, math.ceil(steps / n_batches)), total_steps=steps, n_batches=n_batches, lr=t.scaled_lr)
