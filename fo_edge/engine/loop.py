"""The one training loop: epochs, batches, health checks, checkpoints and progress, for every engine.

    for epoch e (from a checkpoint's epoch):            stepper.start_epoch(e)
        for each batch of epoch_order(n, seed, e)        (plan.starts, from the checkpoint's offset in its epoch)
            stepper.step(idx, e, s)                      s: the zero-based step index; then s <- s + 1
            health: monitor.check(s, *stepper.health())  a NumericHealthError here or from the step stops the run
            on_batch(len(idx)); every N steps: on_checkpoint(state)
        history += {"epoch": e + 1, "steps": s, **stepper.evaluate(e), "seconds", "samples_per_s"}
        on_epoch(record); on_checkpoint(state at (e + 1, 0))
    return stepper.outcome(history, warnings)

A checkpoint is ``stepper.state()`` (the engine's arrays: ``w``, ``rng``, ``counters``, ``proj`` and whatever
else it needs to resume) plus ``position`` (epoch, next batch start, step, then ``stepper.tallies()``: samples
trained, samples evaluated) and ``history`` (JSON). ``resume=`` such a state continues at its batch:
``stepper.restore(state)`` puts the engine's arrays back, the loop its position and history. A health stop
raises :class:`engine.health.TrainingStopped` carrying ``stepper.outcome`` of what was done. ``seconds`` is
an epoch's training time (its evaluation excluded), ``samples_per_s`` the samples it trained over it.

The engines (``stream``: the Numba device loop; ``torch_loop``, ``spiking_torch``, ``conv_loop``,
``mano_loop``) are :class:`Stepper` s: what a step holds differs (device stores, RNG streams, FOTON's F,
Adam's moments), the loop around it does not.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Protocol

import numpy as np

from .health import HealthConfig, HealthMonitor, NumericHealthError, TrainingStopped
from .plan import BatchPlan, epoch_order

__all__ = ["Stepper", "run_epochs", "resume_position"]


class Stepper(Protocol):
    """One engine's training, a step at a time. ``n_train``: training samples; ``n_monitored``: the layers (or
    stages) the health monitor checks."""

    n_train: int
    n_monitored: int

    def start_epoch(self, epoch: int) -> None:
        """Before an epoch's first batch (learning-rate schedules, per-epoch tallies)."""

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        """Train on the samples ``idx`` (the batch's indices into the training split) as zero-based step ``step``
        of zero-based ``epoch``."""

    def health(self) -> tuple[np.ndarray | None, list]:
        """What the monitor checks after a step: the cumulative counters (phases, L + 1, names) or None, and the
        real-valued weights per monitored layer (None for a store that saturates instead)."""

    def evaluate(self, epoch: int) -> dict:
        """The epoch's test metrics (and any per-epoch figures, e.g. its lr), in the order run.json shows them."""

    def state(self) -> dict[str, np.ndarray]:
        """The engine's checkpoint arrays as they stand after the last step (``w`` at least)."""

    def tallies(self) -> tuple[int, int]:
        """(samples trained, samples evaluated) so far, as a checkpoint's position records them."""

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Put a checkpoint's arrays back (raises errors.RunError when they do not fit this run)."""

    def outcome(self, history: list[dict], warnings: list[str]) -> Any:
        """What the engine returns: after the last epoch, or carried by TrainingStopped."""


def resume_position(resume: dict) -> tuple[int, int, int, list[dict]]:
    """(epoch, next batch start, step, history) of a checkpoint."""
    epoch, begin, step = (int(v) for v in resume["position"][:3])
    return epoch, begin, step, json.loads(str(resume["history"]))


def run_epochs(stepper: Stepper, *, epochs: int, batch_size: int, seed: int, plan: BatchPlan = BatchPlan(),
               on_batch: Callable[[int], None] | None = None, health: HealthConfig | None = None,
               checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
               resume: dict | None = None, on_epoch: Callable[[dict], None] | None = None) -> Any:
    """Train ``stepper`` for ``epochs`` epochs of ``batch_size`` (module docstring); ``health`` None: no monitor
    (a NumericHealthError the step raises still stops the run)."""
    first_epoch, first_begin, step, history = 0, 0, 0, []
    if resume is not None:
        stepper.restore(resume)
        first_epoch, first_begin, step, history = resume_position(resume)
    monitor = HealthMonitor(health, stepper.n_monitored) if health is not None else None

    def state(epoch: int, begin: int) -> dict:
        return {**stepper.state(), "position": np.array([epoch, begin, step, *stepper.tallies()], dtype=np.int64),
                "history": np.array(json.dumps(history))}

    for epoch in range(first_epoch, epochs):
        start, trained = time.perf_counter(), 0
        stepper.start_epoch(epoch)
        order = epoch_order(stepper.n_train, seed, epoch)
        for begin in plan.starts(len(order), batch_size, first_begin if epoch == first_epoch else 0):
            idx = order[begin:begin + batch_size]
            try:
                stepper.step(idx, epoch, step)
                step += 1
                if monitor is not None:
                    monitor.check(step, *stepper.health())
            except NumericHealthError as error:
                raise TrainingStopped(error, stepper.outcome(history, monitor.warnings if monitor else [])) from None
            trained += len(idx)
            if on_batch is not None:
                on_batch(len(idx))
            if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                on_checkpoint(state(epoch, begin + batch_size))
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "steps": step, **stepper.evaluate(epoch), "seconds": seconds,
                  "samples_per_s": trained / max(seconds, 1e-9)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if on_checkpoint is not None and checkpoint_every:
            on_checkpoint(state(epoch + 1, 0))
    return stepper.outcome(history, monitor.warnings if monitor is not None else [])
