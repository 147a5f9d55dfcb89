"""The device training loop on the Numba path: every buffer from the memory arena, then streamed steps.

Order per step: quantise the batch into the input buffer, (FOTON) refresh F every ``refresh_every`` steps,
run the rule's fused step, (FOTON) re-orthogonalise every ``ortho_every`` steps. Memory is allocated once,
before the first step, so a model that cannot fit is refused before any work, with the breakdown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..accounting.memory import MemoryArena
from ..data import Dataset
from ..device.spec import DeviceProfile
from ..kernels.rng import new_state
from ..accounting.counters import counters_record
from ..kernels.counters import FORWARD, new_counters
from ..rules.foton import FOTONConfig
from ..rules.numba_binding import (allocate_buffers, fill_fixed_projection, make_params, orthogonalize,
                                   predict, quantize_input, refresh_projection, run_step, to_device)
from .torch_loop import epoch_order

__all__ = ["StreamOutcome", "train_stream", "plan_memory"]


@dataclass
class StreamOutcome:
    """history: per-epoch metrics; stored: arrays for weights.npz (mantissas W{l} and exponents exp{l});
    memory: the arena's report; counters: per phase and layer (accounting.counters.counters_record)."""

    history: list[dict]
    stored: dict[str, np.ndarray]
    memory: dict
    counters: dict


def plan_memory(dims, profile: DeviceProfile, rule: str, batch_size: int, schedule: str = "stream",
                ortho: bool = True) -> MemoryArena:
    """Allocate exactly what a training run would, and return the arena (raises DeviceMemoryError)."""
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    weights = [np.zeros((int(b), int(a)), dtype=np.float32) for a, b in zip(dims[:-1], dims[1:])]
    for w in weights:
        w.flat[0] = 1.0  # calibration needs a nonzero peak
    to_device(weights, profile, arena)
    allocate_buffers(arena, profile, dims, batch_size, rule, schedule, ortho)
    return arena


def train_stream(weights: list[np.ndarray], data: Dataset, rule: str, config, profile: DeviceProfile, *,
                 activation: str, error: str, lr: float, epochs: int, batch_size: int, seed: int,
                 schedule: str = "stream", on_batch: Callable[[int], None] | None = None) -> StreamOutcome:
    """Train on the device model; see the module docstring."""
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    net = to_device(weights, profile, arena)
    is_foton = isinstance(config, FOTONConfig)
    ortho = is_foton and config.ortho_every > 0
    bufs = allocate_buffers(arena, profile, net.dims, batch_size, rule, schedule, ortho)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    params = make_params(profile, activation, error, getattr(config, "temperature", 1.0),
                         ftp_label=getattr(config, "target_mode", "error") == "label")
    counters = new_counters(net.n_layers)
    io = counters[FORWARD, net.n_layers]
    trained = inferred = 0
    rng = new_state(seed)
    eye = np.eye(int(net.dims[-1]))
    step, history = 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = epoch_order(len(data.x_train), seed, epoch)
        for begin in range(0, len(order), batch_size):
            idx = order[begin:begin + batch_size]
            x_dev = quantize_input(data.x_train[idx], profile, bufs.x, io, rng)
            if is_foton and step % config.refresh_every == 0:
                refresh_projection(net, bufs, profile, counters, rng)
            run_step(rule, net, bufs, profile, params, x_dev, eye[data.y_train[idx]], lr, schedule, counters, rng)
            step += 1
            trained += len(idx)
            if ortho and step % config.ortho_every == 0:
                orthogonalize(net, profile, config.bjorck_iters, counters, rng)
            if on_batch is not None:
                on_batch(len(idx))
        seconds = time.perf_counter() - start
        labels = predict(net, bufs, profile, params, data.x_test, counters, rng)
        inferred += len(labels)
        history.append({"epoch": epoch + 1, "steps": step,
                        "test_accuracy": float((labels == data.y_test).mean()),
                        "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9)})
    stored = {}
    for l in range(net.n_layers):
        chunk = net.w[net.offs[l]:net.offs[l + 1]].reshape(int(net.dims[l + 1]), int(net.dims[l]))
        if net.quantized:
            stored[f"W{l}"] = chunk.astype(np.int32)
            stored[f"exp{l}"] = np.array(-int(net.w_frac[l]), dtype=np.int32)
        else:  # float, or analog conductances as the real weights they encode
            stored[f"W{l}"] = (chunk / float(net.w_one[l])).astype(np.float32)
    record = counters_record(counters, training_samples=trained, inference_samples=inferred)
    return StreamOutcome(history, stored, arena.report(), record)
