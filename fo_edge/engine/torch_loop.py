"""The float reference training loop (PyTorch, CPU or CUDA).

Per batch: ``g = rule.update_torch(W, x, t)``, then ``W_l <- W_l - lr * g_l``; FOTON additionally
re-orthogonalises every ``ortho_every`` steps and refreshes its projection F every ``refresh_every`` steps.
Checkpoints, resume and the weight health checks follow the stream engine's conventions.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import numpy as np
import torch

from ..data import Dataset
from ..errors import RunError
from ..models.mlp import MLP
from ..rules import RULES, bjorck_torch, projection_torch
from ..rules.foton import FOTONConfig
from .health import HealthConfig, HealthMonitor, NumericHealthError, TrainingStopped

__all__ = ["train_torch", "evaluate_torch", "epoch_order"]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), shared by every backend."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def evaluate_torch(weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str,
                   chunk: int = 4096) -> float:
    """Top-1 accuracy of the MLP on (x: (N, d_0), y: (N,) labels)."""
    model = MLP([w.detach() for w in weights], activation).to(x.device)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            correct += int((model(x[start:start + chunk]).argmax(1) == y[start:start + chunk]).sum())
    return correct / max(len(x), 1)


def train_torch(weights: list[np.ndarray], data: Dataset, rule: str, config, *, activation: str, error: str,
                lr: float, epochs: int, batch_size: int, seed: int, device: str = "cpu",
                on_batch: Callable[[int], None] | None = None,
                on_epoch: Callable[[dict], None] | None = None, health: HealthConfig | None = None,
                checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
                resume: dict | None = None, on_step: Callable | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """Train in float32 on ``device``; returns the final weights (numpy float32) and per-epoch metrics.

    Checkpoints and ``resume`` use the stream engine's state keys (``w`` flat float32, ``proj`` FOTON's F,
    ``position``, ``history``; ``rng`` and ``counters`` are empty: this path draws no random numbers and counts
    nothing). ``health`` checks non-finite and exploding weights after every step; a stop raises
    :class:`TrainingStopped` carrying (weights, history). ``on_step(step, ws, x, t, config)`` sees each batch
    before its update (diagnostics).
    """
    spec = RULES[rule]
    dev = torch.device(device)
    ws = [torch.as_tensor(w, dtype=torch.float32, device=dev).clone() for w in weights]
    x_tr = torch.as_tensor(data.x_train, device=dev)
    y_tr = torch.as_tensor(data.y_train, device=dev)
    x_te = torch.as_tensor(data.x_test, device=dev)
    y_te = torch.as_tensor(data.y_test, device=dev)
    eye = torch.eye(ws[-1].shape[0], device=dev)
    is_foton = isinstance(config, FOTONConfig)
    step, history, first_epoch, first_begin = 0, [], 0, 0
    if resume is not None:
        ws, config, (first_epoch, first_begin, step), history = _restore(resume, ws, config, is_foton, dev)
    monitor = HealthMonitor(health, len(ws)) if health is not None else None

    def state(epoch: int, begin: int) -> dict:
        proj = config.projection if is_foton and config.projection is not None else torch.zeros(0)
        return {"w": torch.cat([w.reshape(-1) for w in ws]).cpu().numpy(), "rng": np.zeros(0, dtype=np.uint64),
                "counters": np.zeros(0, dtype=np.int64), "proj": proj.cpu().numpy().astype(np.float32),
                "position": np.array([epoch, begin, step, 0, 0], dtype=np.int64),
                "history": np.array(json.dumps(history))}

    for epoch in range(first_epoch, epochs):
        start = time.perf_counter()
        order = torch.as_tensor(epoch_order(len(x_tr), seed, epoch), device=dev)
        for begin in range(first_begin if epoch == first_epoch else 0, len(order), batch_size):
            idx = order[begin:begin + batch_size]
            x, t = x_tr[idx], eye[y_tr[idx]]
            if is_foton and step % config.refresh_every == 0:
                config = dataclasses.replace(config, projection=projection_torch(ws))
            if on_step is not None:
                on_step(step, ws, x, t, config)
            grads = spec.update_torch(ws, x, t, activation=activation, error=error, config=config)
            for w, g in zip(ws, grads):
                w.sub_(lr * g)
            step += 1
            if is_foton and config.ortho_every and step % config.ortho_every == 0:
                ws = [bjorck_torch(w, config.bjorck_iters) for w in ws]
            if monitor is not None:
                try:
                    monitor.check(step, None, [w.detach().cpu().numpy() for w in ws])
                except NumericHealthError as exc:
                    raise TrainingStopped(exc, ([w.cpu().numpy() for w in ws], history)) from None
            if on_batch is not None:
                on_batch(len(idx))
            if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                on_checkpoint(state(epoch, begin + batch_size))
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "steps": step, "test_accuracy": evaluate_torch(ws, x_te, y_te, activation),
                  "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if on_checkpoint is not None and checkpoint_every:
            on_checkpoint(state(epoch + 1, 0))
    return [w.cpu().numpy() for w in ws], history


def _restore(resume: dict, ws: list, config, is_foton: bool, dev):
    """Weights, FOTON's F and the loop position from a checkpoint (sizes checked)."""
    flat = resume["w"]
    if flat.dtype != np.float32 or flat.shape != (sum(w.numel() for w in ws),):
        raise RunError(f"checkpoint does not match this run: w is {flat.dtype} {flat.shape}")
    restored, offset = [], 0
    for w in ws:
        restored.append(torch.as_tensor(flat[offset:offset + w.numel()].reshape(w.shape), device=dev).clone())
        offset += w.numel()
    if is_foton and resume["proj"].size:
        config = dataclasses.replace(config, projection=torch.as_tensor(resume["proj"], device=dev))
    epoch, begin, step = (int(v) for v in resume["position"][:3])
    return restored, config, (epoch, begin, step), json.loads(str(resume["history"]))
