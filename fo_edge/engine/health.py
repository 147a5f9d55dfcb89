"""Numeric health of a device run, checked after every step from the counters and the weight store.

Unhealthy, per layer: non-finite weights (float and analog stores); weights beyond ``max_weight`` in real units
(exploding); a saturation storm, where the step's saturation events exceed ``saturation_limit`` of the values
the layer produced (neuron outputs plus weights visited by the update); a stall, where every nonzero update of
the layer rounded to no change for ``stall_steps`` consecutive steps. ``action`` "stop" raises
:class:`NumericHealthError` naming the layer and step; "warn" records the first warning per kind and goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import RunError
from ..kernels.counters import (INFERENCE, LOST, NEURON_ACTIVE, NEURON_INACTIVE, SATURATION, SYN_UPDATES,
                                WEIGHT_WRITES)

__all__ = ["HealthConfig", "HealthMonitor", "NumericHealthError", "TrainingStopped"]


class NumericHealthError(RunError):
    """A run stopped for numeric health; ``layer`` (1-based) and ``step`` say where."""

    def __init__(self, message: str, layer: int, step: int, kind: str):
        super().__init__(message)
        self.layer, self.step, self.kind = layer, step, kind


class TrainingStopped(Exception):
    """A training loop stopped early: ``error`` (a NumericHealthError) says why, ``outcome`` holds what was done
    (the loop's usual return value)."""

    def __init__(self, error: NumericHealthError, outcome):
        super().__init__(str(error))
        self.error, self.outcome = error, outcome


@dataclass(frozen=True)
class HealthConfig:
    """action: "stop" or "warn"; saturation_limit: fraction in (0, 1]; stall_steps: >= 1; max_weight: > 0."""

    action: str = "stop"
    saturation_limit: float = 0.5
    stall_steps: int = 500
    max_weight: float = 1e4


@dataclass
class HealthMonitor:
    """Call :meth:`check` after each step with the cumulative counters (phases, L + 1, names)."""

    config: HealthConfig
    n_layers: int
    warnings: list[str] = field(default_factory=list)
    _previous: np.ndarray | None = None
    _stalled: np.ndarray | None = None

    def _flag(self, kind: str, layer: int, step: int, what: str) -> None:
        message = f"numeric health: layer {layer + 1} at step {step}: {what}"
        if self.config.action == "stop":
            raise NumericHealthError(message, layer + 1, step, kind)
        if not any(w.startswith(f"[{kind}]") for w in self.warnings):
            self.warnings.append(f"[{kind}] {message}")

    def check(self, step: int, counters: np.ndarray | None, weights: list) -> None:
        """weights: per-layer real-valued arrays (float) or None for integer stores (which cannot overflow);
        counters: the cumulative (phases, L + 1, names) array, or None where there are none (torch path)."""
        for l, w in enumerate(weights):
            if w is None:
                continue
            if not np.isfinite(w).all():
                self._flag("nonfinite", l, step, "non-finite weights (NaN or Inf): the run diverged")
            peak = float(np.abs(w).max()) if w.size else 0.0
            if peak > self.config.max_weight:
                self._flag("exploding", l, step, f"max |W| = {peak:.3g} exceeds {self.config.max_weight:g}: the "
                           f"weights are exploding (lower --lr)")
        if counters is None:
            return
        training = counters[:INFERENCE, :self.n_layers].sum(axis=0)  # (L, names)
        delta = training if self._previous is None else training - self._previous
        self._previous = training.copy()
        if self._stalled is None:
            self._stalled = np.zeros(self.n_layers, dtype=np.int64)
        for l in range(self.n_layers):
            produced = delta[l, NEURON_ACTIVE] + delta[l, NEURON_INACTIVE] + delta[l, SYN_UPDATES]
            if produced and delta[l, SATURATION] > self.config.saturation_limit * produced:
                self._flag("saturation", l, step, f"saturation storm: {int(delta[l, SATURATION])} of {int(produced)} "
                           f"values clipped in one step (limit {self.config.saturation_limit:g}); lower --lr or "
                           f"widen the formats")
            stalled = delta[l, LOST] > 0 and delta[l, WEIGHT_WRITES] == 0
            self._stalled[l] = self._stalled[l] + 1 if stalled else 0
            if self._stalled[l] >= self.config.stall_steps:
                self._flag("stall", l, step, f"every update rounded to zero for {self._stalled[l]} steps: learning "
                           f"has stalled (raise --lr or use stochastic update rounding)")

