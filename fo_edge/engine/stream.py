"""The device training loop on the Numba path: every buffer from the memory arena, then streamed steps.

Order per step: quantise the batch into the input buffer, (FOTON) refresh F every ``refresh_every`` steps,
run the rule's fused step, (FOTON) re-orthogonalise every ``ortho_every`` steps. Memory is allocated once,
before the first step, so a model that cannot fit is refused before any work, with the breakdown.
"""
from __future__ import annotations

import json
import time
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
from .health import HealthConfig, HealthMonitor, NumericHealthError, TrainingStopped
from .plan import BatchPlan, epoch_order

__all__ = ["StreamOutcome", "StreamStopped", "train_stream", "plan_memory"]


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
    """Train on the device model; see the module docstring.

    Every ``checkpoint_every`` steps (and after each epoch's evaluation) ``on_checkpoint(state)`` gets the full
    state as arrays (weights, RNG, counters, FOTON's F, position, history); ``resume=state`` continues from
    one, bit-identically. A numeric-health stop raises :class:`StreamStopped` carrying the partial outcome.
    ``plan``: the batches and the per-step lr (engine.plan). ``hidden_error``: a spiking device's hidden error
    (rules.spiking_binding.HIDDEN_ERRORS; None: spike counts). ``dropout``: inverted dropout of the hidden
    layers with this probability, one mask per step from (seed, step) shared by all the step's passes, the
    torch path's masks (rules.numba_binding.dropout_drop). ``momentum`` / ``weight_decay``: SGD as PyTorch's,
    with a velocity per weight (linear.momentum_update_; checkpointed).
    """
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    net = to_device(weights, profile, arena)
    is_foton = isinstance(config, FOTONConfig)
    ortho = is_foton and config.ortho_every > 0
    spiking = profile.spiking is not None
    if spiking:
        bufs = allocate_spiking(arena, profile, net.dims, batch_size, rule, hidden_error or "spike-count")
        refresh_feedback(rule, config, net, bufs)
    else:
        bufs = allocate_buffers(arena, profile, net.dims, batch_size, rule, schedule, ortho, dropout > 0,
                                momentum > 0 or weight_decay > 0)
        fill_fixed_projection(bufs, profile, rule, net.dims, config)
    params = make_params(profile, "identity" if spiking else activation, error, getattr(config, "temperature", 1.0),
                         **({} if spiking else ftp_kernel_options(config)))
    counters = new_counters(net.n_layers)
    io = counters[FORWARD, net.n_layers]
    rng = new_state(seed)
    eye = np.eye(int(net.dims[-1]))
    first_epoch, first_begin, step, trained, inferred, history = 0, 0, 0, 0, 0, []
    if resume is not None:
        first_epoch, first_begin, step, trained, inferred, history = _restore(resume, net, bufs, counters, rng)
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
    monitor = HealthMonitor(health, net.n_layers) if health is not None else None

    def state(epoch: int, begin: int) -> dict:
        saved = {"w": net.w.copy(), "rng": rng.copy(), "counters": counters.copy(), "proj": bufs.proj.copy(),
                 "position": np.array([epoch, begin, step, trained, inferred], dtype=np.int64),
                 "history": np.array(json.dumps(history))}
        if getattr(bufs, "vel", None) is not None and bufs.vel.size:
            saved["velocity"] = bufs.vel.copy()
        if net.per_channel:  # their exponents (a dynamic net's change during the run)
            saved["w_exp"] = net.all_row_exponents()
        return saved

    def outcome(warnings: list[str]) -> StreamOutcome:
        record = counters_record(counters, training_samples=trained, inference_samples=inferred)
        return StreamOutcome(history, _stored(net), arena.report(), record, warnings)

    for epoch in range(first_epoch, epochs):
        start = time.perf_counter()
        order = epoch_order(len(data.x_train), seed, epoch)
        iters_used: list[int] = []
        for begin in plan.starts(len(order), batch_size, first_begin if epoch == first_epoch else 0):
            idx = order[begin:begin + batch_size]
            lr_step = plan.step_lr(lr, epoch, len(idx), batch_size)
            if spiking:
                if is_foton and step % config.refresh_every == 0:
                    refresh_feedback(rule, config, net, bufs)
                spiking_step(rule, config, net, bufs, profile, params, data.x_train[idx], eye[data.y_train[idx]],
                             lr_step, error, counters, rng)
            else:
                x_dev = quantize_input(data.x_train[idx], profile, bufs.x, io, rng)
                if is_foton and step % config.refresh_every == 0:
                    refresh_projection(net, bufs, profile, counters, rng)
                drop = dropout_drop(bufs, profile, net.dims, len(idx), dropout, seed, step)
                run_step(rule, net, bufs, profile, params, x_dev, eye[data.y_train[idx]], lr_step, schedule,
                         counters, rng, drop=drop, sgd=(momentum, weight_decay))
            step += 1
            trained += len(idx)
            if ortho and step % config.ortho_every == 0:
                iters_used += orthogonalize(net, profile, config.bjorck_iters, counters, rng, config.bjorck_tol)
            if monitor is not None:
                try:
                    monitor.check(step, counters, _real_views(net))
                except NumericHealthError as exc:
                    raise StreamStopped(exc, outcome(monitor.warnings)) from None
            if on_batch is not None:
                on_batch(len(idx))
            if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                on_checkpoint(state(epoch, begin + batch_size))
        seconds = time.perf_counter() - start
        labels = spiking_predict(net, bufs, profile, data.x_test, counters) if spiking else \
            predict(net, bufs, profile, params, data.x_test, counters, rng)
        inferred += len(labels)
        history.append({"epoch": epoch + 1, "steps": step,
                        "test_accuracy": float((labels == data.y_test).mean()),
                        "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9),
                        "lr": plan.epoch_lr(lr, epoch)})
        if iters_used and config.bjorck_tol > 0:
            history[-1]["bjorck_iters_mean"] = float(np.mean(iters_used))
        if on_checkpoint is not None and checkpoint_every:
            on_checkpoint(state(epoch + 1, 0))
    return outcome(monitor.warnings if monitor is not None else [])


def _widened(source, target) -> bool:
    """Whether ``source`` holds the integers of ``target``'s dtype in a wider integer dtype."""
    return (source is not None and source.dtype != target.dtype and source.dtype.kind == target.dtype.kind == "i"
            and source.shape == target.shape and np.array_equal(source.astype(target.dtype), source))


def _restore(resume: dict, net, bufs, counters, rng):
    """Copy a checkpoint's arrays into the live buffers (shapes checked); returns the loop position."""
    for name, target in (("w", net.w), ("rng", rng), ("counters", counters), ("proj", bufs.proj)):
        source = resume.get(name)
        if _widened(source, target):  # weights saved as int64 before the store took the format's width
            source = source.astype(target.dtype)
        if source is None or source.shape != target.shape or source.dtype != target.dtype:
            raise RunError(f"checkpoint does not match this run: {name} is "
                           f"{None if source is None else (source.dtype, source.shape)}, expected "
                           f"{(target.dtype, target.shape)}")
        target[...] = source
    epoch, begin, step, trained, inferred = (int(v) for v in resume["position"])
    return epoch, begin, step, trained, inferred, json.loads(str(resume["history"]))
