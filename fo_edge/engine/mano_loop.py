"""Training MANO models (models.mano) with BP or with FTP's block-local losses, on the PyTorch path.

A model has three stages: ``stem`` (embedding), ``blocks`` (MANO blocks) and ``head`` (readout).
- ``bp``: autograd through the whole model; the graph of every block is alive at the backward pass.
- ``ftp``: per batch, (1) a clean pass without a graph gives h_0 = stem(x), h_l = block_l(h_{l-1}), y = head(h_L)
  and the output error e (softmax(y) - t for classes, y - u for fields); (2) the target pass: tau_1 =
  h_1 - e G^T (G: (dim, outputs) fixed random, seeded, applied per grid point: for classes the same e at every
  point, for fields the point's own error), tau_l = block_l(tau_{l-1}) without a graph; (3) each stage
  learns from a local loss with its input detached: the stem and block 1 from 0.5 |block_1(stem(x)) - tau_1|^2,
  block l from 0.5 |block_l(h_{l-1}) - tau_l|^2, the head from the task loss on h_L. Each local graph is
  backpropagated and freed before the next is built, so no gradient crosses a block boundary and training
  memory does not grow with depth. Both rules use Adam.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..rules.base import feedback_matrix

__all__ = ["MANOTrainConfig", "train_mano", "MANO_RULES"]

MANO_RULES = ("bp", "ftp")


@dataclass(frozen=True)
class MANOTrainConfig:
    """rule: bp | ftp; task: classify (targets are labels) | field (targets are fields, MSE); lr: Adam's;
    g_scale: FTP's G scale (U(-1, 1) * g_scale * sqrt(6 / outputs), as rules.ftp)."""

    rule: str = "bp"
    task: str = "classify"
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    g_scale: float = 1.0

    def validate(self) -> None:
        if self.rule not in MANO_RULES:
            raise ConfigError(f"MANO trains with {' or '.join(MANO_RULES)}, not {self.rule!r}")
        if self.task not in ("classify", "field"):
            raise ConfigError(f"unknown MANO task {self.task!r}; choose classify or field")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("lr must be > 0, epochs and batch_size >= 1")


def _task_loss(y: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    return F.cross_entropy(y, target) if task == "classify" else 0.5 * ((y - target) ** 2).sum() / len(y)


def _output_error(y: torch.Tensor, target: torch.Tensor, task: str, classes: int) -> torch.Tensor:
    """e: (B, classes) for classification, (B, H, W, 1) per point for fields."""
    if task == "classify":
        return torch.softmax(y, dim=1) - F.one_hot(target, classes).to(y.dtype)
    return (y - target)[..., None]


def ftp_step(model, x: torch.Tensor, target: torch.Tensor, config: MANOTrainConfig, g: torch.Tensor,
             optimizer) -> float:
    """One FTP step on a batch (module docstring); returns the task loss of the clean pass."""
    with torch.no_grad():
        hs = [model.stem(x)]
        for block in model.blocks:
            hs.append(block(hs[-1]))
        y = model.head(hs[-1])
        e = _output_error(y, target, config.task, g.shape[1])
        shift = (e @ g.T)[:, None, None, :] if config.task == "classify" else e @ g.T
        taus = [hs[1] - shift]
        for block in model.blocks[1:]:
            taus.append(block(taus[-1]))
    optimizer.zero_grad(set_to_none=True)
    for l, block in enumerate(model.blocks):
        h_in = model.stem(x) if l == 0 else hs[l]
        local = 0.5 * ((block(h_in) - taus[l]) ** 2).sum() / len(x)
        local.backward()  # frees this block's graph before the next one is built
    _task_loss(model.head(hs[-1]), target, config.task).backward()
    optimizer.step()
    return float(_task_loss(y, target, config.task))


def train_mano(model: torch.nn.Module, x_train: np.ndarray, y_train: np.ndarray, config: MANOTrainConfig,
               evaluate: Callable[[torch.nn.Module], float], outputs: int,
               on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place on (x_train, y_train) (labels (N,) or fields (N, n, n)); ``evaluate(model)`` gives
    the epoch's test metric; ``outputs`` is the classes or 1 (G's width). Returns per-epoch records."""
    config.validate()
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    dim = model.blocks[0].norm1.normalized_shape[0]
    g = torch.tensor(feedback_matrix((dim, outputs), outputs, config.g_scale, config.seed), dtype=torch.float32)
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = np.random.default_rng([config.seed, epoch]).permutation(len(x_train))
        losses = []
        model.train()
        for begin in range(0, len(order), config.batch_size):
            idx = order[begin:begin + config.batch_size]
            x = torch.as_tensor(x_train[idx])
            target = torch.as_tensor(y_train[idx])
            if config.rule == "ftp":
                losses.append(ftp_step(model, x, target, config, g, optimizer))
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = _task_loss(model(x), target, config.task)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        seconds = time.perf_counter() - start
        model.eval()
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "test_metric": evaluate(model),
                  "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
