"""The data schedule every training loop shares: epoch order, batch boundaries, the per-step learning rate.

``epoch_order(n, seed, epoch)`` is a permutation seeded by (seed, epoch), so every backend sees the same
samples in the same order. :class:`BatchPlan` holds the recipe options that change which batches a loop
takes and how large a step each one makes:

- ``drop_last``: skip an epoch's final batch when it has fewer than ``batch_size`` rows (PyTorch's
  ``DataLoader(drop_last=True)``);
- ``batch_divisor``: "actual" averages each update over the rows it has (fo-edge's default); "configured"
  divides by the configured batch size, as the FOTON reference does, so a partial last batch of b rows takes
  a step b / B as large: lr_step = lr * b / B, since every rule's estimate is a mean over the b rows;
- ``lr_milestones`` / ``lr_gamma``: step decay, lr_e = lr * gamma ** (number of milestones m <= e) for the
  zero-based epoch e (PyTorch's MultiStepLR stepped once per epoch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["BatchPlan", "epoch_order", "BATCH_DIVISORS"]

BATCH_DIVISORS = ("actual", "configured")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), shared by every backend."""
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass(frozen=True)
class BatchPlan:
    """See the module docstring; the default plan is fo-edge's behaviour before recipes existed."""

    drop_last: bool = False
    batch_divisor: str = "actual"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        if self.batch_divisor not in BATCH_DIVISORS:
            raise ConfigError(f"batch_divisor must be one of {', '.join(BATCH_DIVISORS)}, got {self.batch_divisor!r}")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise ConfigError(f"lr_milestones must be increasing epoch numbers >= 1, got {list(self.lr_milestones)}")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")

    def starts(self, n: int, batch_size: int, first: int = 0) -> range:
        """Start offsets of an epoch's batches over n samples, from offset ``first`` (a resumed epoch)."""
        stop = n - batch_size + 1 if self.drop_last else n
        return range(first, max(stop, first), batch_size)

    def epoch_lr(self, lr: float, epoch: int) -> float:
        """The learning rate of zero-based ``epoch``."""
        return lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)

    def step_lr(self, lr: float, epoch: int, rows: int, batch_size: int) -> float:
        """The learning rate to apply to a batch of ``rows`` rows whose update is averaged over those rows."""
        base = self.epoch_lr(lr, epoch)
        return base * rows / batch_size if self.batch_divisor == "configured" else base
