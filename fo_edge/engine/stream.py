"""The device training step on the Numba path (engine.loop runs it): every buffer from the memory arena, then
streamed steps.

Order per step: quantise the batch into the input buffer, (FOTON) refresh F every ``refresh_every`` steps,
run the rule's fused step, (FOTON) re-orthogonalise every ``ortho_every`` steps. Memory is allocated once,
before the first step, so a model that cannot fit is refused before any work, with the breakdown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..accounting.memory import MemoryArena
from ..data import Dataset
from ..device.spec import DeviceProfile
from ..errors import RunError
from ..kernels.rng import new_state
from ..accounting.counters import counters_record
from ..kernels.counters import FORWARD, new_counters
from ..rules.foton import FOTONConfig
from ..rules.numba_binding import (allocate_buffers, dropout_drop, fill_fixed_projection, ftp_kernel_options, make_params, orthogonalize,
                                   predict, quantize_input, refresh_projection, run_step, to_device)
from ..rules.spiking_binding import allocate_spiking, refresh_feedback, spiking_predict, spiking_step
from .health import HealthConfig, TrainingStopped
from .loop import run_epochs
from .plan import BatchPlan

__all__ = ["StreamOutcome", "StreamStopped", "StreamStepper", "train_stream", "plan_memory"]


@dataclass
class StreamOutcome:
    """history: per-epoch metrics; stored: arrays for weights.npz (mantissas W{l} and exponents exp{l});
    memory: the arena's report; counters: per phase and layer (accounting.counters.counters_record)."""

    history: list[dict]
    stored: dict[str, np.ndarray]
    memory: dict
    counters: dict
    warnings: list[str] = field(default_factory=list)


StreamStopped = TrainingStopped  # what train_stream raises, with a StreamOutcome


def plan_memory(dims, profile: DeviceProfile, rule: str, batch_size: int, schedule: str = "stream",
                ortho: bool = True, hidden_error: str | None = None, dropout: float = 0.0,
                momentum: bool = False) -> MemoryArena:
    """Allocate exactly what a training run would, and return the arena (raises DeviceMemoryError)."""
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    weights = [np.zeros((int(b), int(a)), dtype=np.float32) for a, b in zip(dims[:-1], dims[1:])]
    for w in weights:
        w.flat[0] = 1.0  # calibration needs a nonzero peak
    to_device(weights, profile, arena)
    if profile.spiking is not None:
        allocate_spiking(arena, profile, dims, batch_size, rule, hidden_error or "spike-count")
    else:
        allocate_buffers(arena, profile, dims, batch_size, rule, schedule, ortho, dropout > 0, momentum)
    return arena


def _stored(net) -> dict[str, np.ndarray]:
    stored = {}
    for l in range(net.n_layers):
        chunk = net.w[net.offs[l]:net.offs[l + 1]].reshape(int(net.dims[l + 1]), int(net.dims[l]))
        if net.quantized:
            stored[f"W{l}"] = chunk.astype(np.int32)
            exps = net.row_exponents(l)  # one per row for per-channel scales, else the layer's as a scalar
            stored[f"exp{l}"] = (-exps if net.per_channel else np.array(-exps[0])).astype(np.int32)
        else:  # float, or analog conductances as the real weights they encode
            stored[f"W{l}"] = (chunk / net.real_scale(l)).astype(np.float32)
    return stored


def _real_views(net) -> list:
    """Per-layer real weights for the health check (None for integer stores, which saturate instead)."""
    if net.quantized:
        return [None] * net.n_layers
    views = [net.w[net.offs[l]:net.offs[l + 1]] for l in range(net.n_layers)]
    return [v if net.w_one[l] == 1 else v / float(net.w_one[l]) for l, v in enumerate(views)]


def train_stream(weights: list[np.ndarray], data: Dataset, rule: str, config, profile: DeviceProfile, *,
                 activation: str, error: str, lr: float, epochs: int, batch_size: int, seed: int,
                 schedule: str = "stream", on_batch: Callable[[int], None] | None = None,
                 health: HealthConfig | None = None, checkpoint_every: int = 0,
                 on_checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None,
                 plan: BatchPlan = BatchPlan(), hidden_error: str | None = None,
                 dropout: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0) -> StreamOutcome:
    """Train on the device model; see the module docstring. The epochs, batches, health checks and checkpoints
    are engine.loop's; this module supplies the step (:class:`StreamStepper`).

    Every ``checkpoint_every`` steps (and after each epoch's evaluation) ``on_checkpoint(state)`` gets the full
    state as arrays (weights, RNG, counters, FOTON's F, position, history); ``resume=state`` continues from
    one, bit-identically. A numeric-health stop raises :class:`StreamStopped` carrying the partial outcome.
    ``plan``: the batches and the per-step lr (engine.plan). ``hidden_error``: a spiking device's hidden error
    (rules.spiking_binding.HIDDEN_ERRORS; None: spike counts). ``dropout``: inverted dropout of the hidden
    layers with this probability, one mask per step from (seed, step) shared by all the step's passes, the
    torch path's masks (rules.numba_binding.dropout_drop). ``momentum`` / ``weight_decay``: SGD as PyTorch's,
    with a velocity per weight (linear.momentum_update_; checkpointed).
    """
    stepper = StreamStepper(weights, data, rule, config, profile, activation=activation, error=error, lr=lr,
                            batch_size=batch_size, seed=seed, schedule=schedule, plan=plan,
                            hidden_error=hidden_error, dropout=dropout, momentum=momentum,
                            weight_decay=weight_decay)
    return run_epochs(stepper, epochs=epochs, batch_size=batch_size, seed=seed, plan=plan, on_batch=on_batch,
                      health=health, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint, resume=resume)


class StreamStepper:
    """The Numba device's step (engine.loop.Stepper): quantise the batch, (FOTON) refresh F, the rule's fused
    step, (FOTON) Björck; every buffer from the memory arena, allocated here, before the first step."""

    def __init__(self, weights: list[np.ndarray], data: Dataset, rule: str, config, profile: DeviceProfile, *,
                 activation: str, error: str, lr: float, batch_size: int, seed: int, schedule: str,
                 plan: BatchPlan, hidden_error: str | None, dropout: float, momentum: float, weight_decay: float):
        self.arena = arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
        self.net = net = to_device(weights, profile, arena)
        self.data, self.rule, self.config, self.profile = data, rule, config, profile
        self.error, self.lr, self.batch_size, self.seed, self.schedule, self.plan = error, lr, batch_size, seed, \
            schedule, plan
        self.dropout, self.sgd = dropout, (momentum, weight_decay)
        self.is_foton = isinstance(config, FOTONConfig)
        self.ortho = self.is_foton and config.ortho_every > 0
        self.spiking = profile.spiking is not None
        if self.spiking:
            self.bufs = allocate_spiking(arena, profile, net.dims, batch_size, rule, hidden_error or "spike-count")
            refresh_feedback(rule, config, net, self.bufs)
        else:
            self.bufs = allocate_buffers(arena, profile, net.dims, batch_size, rule, schedule, self.ortho,
                                         dropout > 0, momentum > 0 or weight_decay > 0)
            fill_fixed_projection(self.bufs, profile, rule, net.dims, config)
        self.params = make_params(profile, "identity" if self.spiking else activation, error,
                                  getattr(config, "temperature", 1.0),
                                  **({} if self.spiking else ftp_kernel_options(config)))
        self.counters = new_counters(net.n_layers)
        self.io = self.counters[FORWARD, net.n_layers]
        self.rng = new_state(seed)
        self.eye = np.eye(int(net.dims[-1]))
        self.n_train, self.n_monitored = len(data.x_train), net.n_layers
        self.trained, self.inferred, self.iters_used = 0, 0, []

    def start_epoch(self, epoch: int) -> None:
        self.iters_used = []

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        net, bufs, profile, config, data = self.net, self.bufs, self.profile, self.config, self.data
        lr_step = self.plan.step_lr(self.lr, epoch, len(idx), self.batch_size)
        if self.spiking:
            if self.is_foton and step % config.refresh_every == 0:
                refresh_feedback(self.rule, config, net, bufs)
            spiking_step(self.rule, config, net, bufs, profile, self.params, data.x_train[idx],
                         self.eye[data.y_train[idx]], lr_step, self.error, self.counters, self.rng)
        else:
            x_dev = quantize_input(data.x_train[idx], profile, bufs.x, self.io, self.rng)
            if self.is_foton and step % config.refresh_every == 0:
                refresh_projection(net, bufs, profile, self.counters, self.rng)
            drop = dropout_drop(bufs, profile, net.dims, len(idx), self.dropout, self.seed, step)
            run_step(self.rule, net, bufs, profile, self.params, x_dev, self.eye[data.y_train[idx]], lr_step,
                     self.schedule, self.counters, self.rng, drop=drop, sgd=self.sgd, config=config)
        self.trained += len(idx)
        if self.ortho and (step + 1) % config.ortho_every == 0:
            self.iters_used += orthogonalize(net, profile, config.bjorck_iters, self.counters, self.rng,
                                             config.bjorck_tol)

    def health(self) -> tuple[np.ndarray, list]:
        return self.counters, _real_views(self.net)

    def evaluate(self, epoch: int) -> dict:
        data = self.data
        labels = spiking_predict(self.net, self.bufs, self.profile, data.x_test, self.counters) if self.spiking \
            else predict(self.net, self.bufs, self.profile, self.params, data.x_test, self.counters, self.rng)
        self.inferred += len(labels)
        record = {"test_accuracy": float((labels == data.y_test).mean()), "lr": self.plan.epoch_lr(self.lr, epoch)}
        if self.iters_used and self.config.bjorck_tol > 0:
            record["bjorck_iters_mean"] = float(np.mean(self.iters_used))
        return record

    def state(self) -> dict:
        net, bufs = self.net, self.bufs
        saved = {"w": net.w.copy(), "rng": self.rng.copy(), "counters": self.counters.copy(),
                 "proj": bufs.proj.copy()}
        if getattr(bufs, "vel", None) is not None and bufs.vel.size:
            saved["velocity"] = bufs.vel.copy()
        if net.per_channel:  # their exponents (a dynamic net's change during the run)
            saved["w_exp"] = net.all_row_exponents()
        return saved

    def tallies(self) -> tuple[int, int]:
        return self.trained, self.inferred

    def restore(self, resume: dict) -> None:
        net, bufs = self.net, self.bufs
        _restore(resume, net, bufs, self.counters, self.rng)
        self.trained, self.inferred = (int(v) for v in resume["position"][3:5])
        if getattr(bufs, "vel", None) is not None and bufs.vel.size:
            saved = resume.get("velocity")
            if saved is None or saved.shape != bufs.vel.shape:
                raise RunError("checkpoint does not match this run: it holds no velocity of the right shape for "
                               "SGD with momentum or weight decay")
            bufs.vel[:] = saved
        if net.per_channel:
            exps = resume.get("w_exp")
            if exps is None or exps.shape != net.row_shift.shape:
                raise RunError("checkpoint does not match this run: it holds no per-channel weight exponents of the "
                               "right shape")
            net.set_row_exponents(exps.astype(np.int64))

    def outcome(self, history: list[dict], warnings: list[str]) -> StreamOutcome:
        record = counters_record(self.counters, training_samples=self.trained, inference_samples=self.inferred)
        return StreamOutcome(history, _stored(self.net), self.arena.report(), record, warnings)


def _widened(source, target) -> bool:
    """Whether ``source`` holds the integers of ``target``'s dtype in a wider integer dtype."""
    return (source is not None and source.dtype != target.dtype and source.dtype.kind == target.dtype.kind == "i"
            and source.shape == target.shape and np.array_equal(source.astype(target.dtype), source))


def _restore(resume: dict, net, bufs, counters, rng) -> None:
    """Copy a checkpoint's arrays into the live buffers (shapes checked)."""
    for name, target in (("w", net.w), ("rng", rng), ("counters", counters), ("proj", bufs.proj)):
        source = resume.get(name)
        if _widened(source, target):  # weights saved as int64 before the store took the format's width
            source = source.astype(target.dtype)
        if source is None or source.shape != target.shape or source.dtype != target.dtype:
            raise RunError(f"checkpoint does not match this run: {name} is "
                           f"{None if source is None else (source.dtype, source.shape)}, expected "
                           f"{(target.dtype, target.shape)}")
        target[...] = source
