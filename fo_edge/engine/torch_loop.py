"""The float reference training loop (PyTorch, CPU or CUDA).

Per batch: ``g = rule.update_torch(W, x, t)``, then ``W_l <- W_l - lr * g_l``; FOTON additionally
re-orthogonalises every ``ortho_every`` steps and refreshes its projection F every ``refresh_every`` steps.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from ..data import Dataset
from ..models.mlp import MLP
from ..rules import RULES, bjorck_torch, projection_torch
from ..rules.foton import FOTONConfig

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
                on_epoch: Callable[[dict], None] | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """Train in float32 on ``device``; returns the final weights (numpy float32) and per-epoch metrics."""
    spec = RULES[rule]
    dev = torch.device(device)
    ws = [torch.as_tensor(w, dtype=torch.float32, device=dev).clone() for w in weights]
    x_tr = torch.as_tensor(data.x_train, device=dev)
    y_tr = torch.as_tensor(data.y_train, device=dev)
    x_te = torch.as_tensor(data.x_test, device=dev)
    y_te = torch.as_tensor(data.y_test, device=dev)
    eye = torch.eye(ws[-1].shape[0], device=dev)
    is_foton = isinstance(config, FOTONConfig)
    step, history = 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.as_tensor(epoch_order(len(x_tr), seed, epoch), device=dev)
        for begin in range(0, len(order), batch_size):
            idx = order[begin:begin + batch_size]
            x, t = x_tr[idx], eye[y_tr[idx]]
            if is_foton and step % config.refresh_every == 0:
                config = dataclasses.replace(config, projection=projection_torch(ws))
            grads = spec.update_torch(ws, x, t, activation=activation, error=error, config=config)
            for w, g in zip(ws, grads):
                w.sub_(lr * g)
            step += 1
            if is_foton and config.ortho_every and step % config.ortho_every == 0:
                ws = [bjorck_torch(w, config.bjorck_iters) for w in ws]
            if on_batch is not None:
                on_batch(len(idx))
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "steps": step, "test_accuracy": evaluate_torch(ws, x_te, y_te, activation),
                  "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return [w.cpu().numpy() for w in ws], history
