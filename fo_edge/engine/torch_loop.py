"""The float reference training step (PyTorch, CPU or CUDA), driven by engine.loop.run_epochs.

Per batch: ``g = rule.update_torch(W, x, t)``, then SGD as PyTorch defines it: with weight decay wd and
momentum mu, ``d_l = g_l + wd W_l``, ``v_l <- mu v_l + d_l`` (v_l = d_l on the first step), ``W_l <- W_l - lr v_l``
(mu = wd = 0: ``W_l <- W_l - lr g_l``). FOTON additionally re-orthogonalises every ``ortho_every`` steps and
refreshes its projection F every ``refresh_every`` steps. Dropout (probability p) draws one inverted-dropout
mask per hidden layer and batch from a generator seeded by (seed, step) and shares it between the rule's
passes. The batches, their order and the per-step lr come from :class:`fo_edge.engine.plan.BatchPlan`;
checkpoints, resume and the weight health checks are the one loop's (engine.loop). A ``meter``
(accounting.float_counts.FloatMeter) counts the run in the device kernels' schema: the rule's passes, each
update's writes, Björck, F's refresh and every evaluation; its counts travel in the checkpoints.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ..data import Dataset
from ..errors import RunError
from ..accounting.float_counts import NO_METER, FloatMeter
from ..kernels.counters import INFERENCE
from ..models.mlp import activate_torch
from ..rules import RULES, bjorck_torch, projection_torch
from ..rules.foton import FOTONConfig
from .health import HealthConfig
from .loop import run_epochs
from .plan import BatchPlan, epoch_order

__all__ = ["train_torch", "TorchStepper", "evaluate_torch", "epoch_order", "dropout_masks", "checkpoint_state",
           "restore_checkpoint"]


def dropout_masks(dims, batch: int, p: float, seed: int, step: int, dev) -> list[torch.Tensor] | None:
    """Inverted-dropout masks (B, d_l) for the hidden layers l = 1..L-1: Bernoulli(1 - p) / (1 - p), drawn from
    a generator seeded by (seed, step) so that a resumed run draws the same masks; None when p = 0."""
    if p <= 0:
        return None
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 0xD0]).generate_state(1)[0]))
    keep = 1.0 - p
    return [(torch.rand(batch, int(d), generator=gen) < keep).to(torch.float32).div_(keep).to(dev)
            for d in dims[1:-1]]


def evaluate_torch(weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str,
                   chunk: int = 4096, meter: FloatMeter | None = None) -> float:
    """Top-1 accuracy of the MLP on (x: (N, d_0), y: (N,) labels), layer by layer as models.mlp.MLP computes it
    (``F.linear``, then the activation); ``meter`` counts every layer into the inference phase."""
    tally = meter if meter is not None else NO_METER
    correct = 0
    with torch.no_grad():
        tally.begin_step()
        for start in range(0, len(x), chunk):
            h = x[start:start + chunk]
            for l, w in enumerate(weights):
                out = torch.nn.functional.linear(h, w.detach())
                if l < len(weights) - 1:
                    out = activate_torch(out, activation)
                tally.forward(INFERENCE, l, h, w, out)
                h = out
            correct += int((h.argmax(1) == y[start:start + chunk]).sum())
    if meter is not None:
        meter.inferred += len(x)
    return correct / max(len(x), 1)


def train_torch(weights: list[np.ndarray], data: Dataset, rule: str, config, *, activation: str, error: str,
                lr: float, epochs: int, batch_size: int, seed: int, device: str = "cpu",
                on_batch: Callable[[int], None] | None = None,
                on_epoch: Callable[[dict], None] | None = None, health: HealthConfig | None = None,
                checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
                resume: dict | None = None, on_step: Callable | None = None, plan: BatchPlan = BatchPlan(),
                momentum: float = 0.0, weight_decay: float = 0.0,
                dropout: float = 0.0, meter: FloatMeter | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """Train in float32 on ``device``; returns the final weights (numpy float32) and per-epoch metrics. The
    epochs, batches, health checks and checkpoints are engine.loop's; :class:`TorchStepper` is the step.

    Checkpoints and ``resume`` use the stream engine's state keys (``w`` flat float32, ``proj`` FOTON's F,
    ``position``, ``history``, ``velocity``, the momentum buffers, flat, and ``counters``, the meter's counts
    (empty without a meter); ``rng`` is empty: the dropout masks are seeded by the step). ``health`` checks non-finite
    and exploding weights after every step; a stop raises engine.health.TrainingStopped carrying (weights, history).
    ``on_step(step, ws, x, t, config)`` sees each batch before its update (diagnostics). Each epoch's record
    has the test accuracy, the lr, and for FOTON with a Björck tolerance the mean iterations per call.
    """
    stepper = TorchStepper(weights, data, rule, config, activation=activation, error=error, lr=lr,
                           batch_size=batch_size, seed=seed, device=device, on_step=on_step, plan=plan,
                           momentum=momentum, weight_decay=weight_decay, dropout=dropout, meter=meter)
    return run_epochs(stepper, epochs=epochs, batch_size=batch_size, seed=seed, plan=plan, on_batch=on_batch,
                      health=health, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint, resume=resume,
                      on_epoch=on_epoch)


class TorchStepper:
    """The float step (engine.loop.Stepper): ``g = rule.update_torch(W, x, t)``, then SGD (module docstring);
    FOTON's F refresh and Björck on their schedules; a ``meter`` counts it all."""

    def __init__(self, weights: list[np.ndarray], data: Dataset, rule: str, config, *, activation: str,
                 error: str, lr: float, batch_size: int, seed: int, device: str, on_step: Callable | None,
                 plan: BatchPlan, momentum: float, weight_decay: float, dropout: float, meter: FloatMeter | None):
        self.spec, self.dev = RULES[rule], torch.device(device)
        dev = self.dev
        self.ws = [torch.as_tensor(w, dtype=torch.float32, device=dev).clone() for w in weights]
        self.x_tr, self.y_tr = torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev)
        self.x_te, self.y_te = torch.as_tensor(data.x_test, device=dev), torch.as_tensor(data.y_test, device=dev)
        self.eye = torch.eye(self.ws[-1].shape[0], device=dev)
        self.config, self.is_foton = config, isinstance(config, FOTONConfig)
        self.dims = [self.ws[0].shape[1]] + [w.shape[0] for w in self.ws]
        self.velocity: list[torch.Tensor | None] = [None] * len(self.ws)
        self.activation, self.error, self.lr, self.batch_size, self.seed = activation, error, lr, batch_size, seed
        self.on_step, self.plan, self.momentum, self.weight_decay, self.dropout = on_step, plan, momentum, \
            weight_decay, dropout
        self.meter, self.tally = meter, meter if meter is not None else NO_METER
        self.n_train, self.n_monitored = len(data.x_train), len(self.ws)
        self.iters_used: list[int] = []

    def start_epoch(self, epoch: int) -> None:
        self.iters_used = []

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        ws, meter, tally, config = self.ws, self.meter, self.tally, self.config
        rows = torch.as_tensor(idx, device=self.dev)
        x, t = self.x_tr[rows], self.eye[self.y_tr[rows]]
        if self.is_foton and step % config.refresh_every == 0:
            config = self.config = dataclasses.replace(config, projection=projection_torch(ws))
            tally.refresh()
        if self.on_step is not None:
            self.on_step(step, ws, x, t, config)
        masks = dropout_masks(self.dims, len(idx), self.dropout, self.seed, step, self.dev)
        tally.begin_step()
        grads = self.spec.update_torch(ws, x, t, activation=self.activation, error=self.error, config=config,
                                       masks=masks, meter=tally)
        step_lr = self.plan.step_lr(self.lr, epoch, len(idx), self.batch_size)
        for l, (w, g) in enumerate(zip(ws, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * w
            if self.momentum:
                velocity = self.velocity
                velocity[l] = g.clone() if velocity[l] is None else velocity[l].mul_(self.momentum).add_(g)
                g = velocity[l]
            if meter is None:
                w.sub_(step_lr * g)
            else:
                ws[l] = w - step_lr * g
                meter.update(l, len(idx), w, ws[l], bool(self.momentum or self.weight_decay))
        if meter is not None:
            meter.trained += len(idx)
        if self.is_foton and config.ortho_every and (step + 1) % config.ortho_every == 0:
            self.ws = _orthogonalize(ws, config, self.iters_used, meter)

    def health(self) -> tuple[None, list]:
        return None, [w.detach().cpu().numpy() for w in self.ws]

    def evaluate(self, epoch: int) -> dict:
        record = {"test_accuracy": evaluate_torch(self.ws, self.x_te, self.y_te, self.activation, meter=self.meter),
                  "lr": self.plan.epoch_lr(self.lr, epoch)}
        if self.iters_used and self.config.bjorck_tol > 0:
            record["bjorck_iters_mean"] = float(np.mean(self.iters_used))
        return record

    def state(self) -> dict:
        return checkpoint_state(self.ws, self.config, self.is_foton, self.velocity, self.meter)

    def tallies(self) -> tuple[int, int]:
        return (self.meter.trained, self.meter.inferred) if self.meter is not None else (0, 0)

    def restore(self, resume: dict) -> None:
        self.ws, self.config = restore_checkpoint(resume, self.ws, self.config, self.is_foton, self.dev)
        self.velocity = _restore_velocity(resume, self.ws, self.velocity)
        if self.meter is not None and resume["counters"].size:
            self.meter.restore(resume["counters"].reshape(self.meter.shape.shape),
                               *(int(v) for v in resume["position"][3:5]))

    def outcome(self, history: list[dict], warnings: list[str]) -> tuple[list[np.ndarray], list[dict]]:
        return [w.cpu().numpy() for w in self.ws], history


def checkpoint_state(ws: list, config, is_foton: bool, velocity: list, meter: FloatMeter | None = None) -> dict:
    """A float run's engine arrays in the stream engine's state keys (engine.loop adds ``position`` and
    ``history``): ``w`` the weights flat (float32), ``proj`` FOTON's F (else empty), ``velocity`` the momentum
    buffers flat (empty before the first step or without momentum), ``counters`` the meter's counts flat (empty
    without one); ``rng`` empty."""
    proj = config.projection if is_foton and config.projection is not None else torch.zeros(0)
    moving = [v for v in velocity if v is not None]
    return {"w": torch.cat([w.reshape(-1) for w in ws]).cpu().numpy(), "rng": np.zeros(0, dtype=np.uint64),
            "counters": meter.counts().reshape(-1) if meter is not None else np.zeros(0, dtype=np.int64),
            "proj": proj.cpu().numpy().astype(np.float32),
            "velocity": torch.cat([v.reshape(-1) for v in moving]).cpu().numpy() if moving
            else np.zeros(0, dtype=np.float32)}


def _orthogonalize(ws: list, config: FOTONConfig, iters_used: list[int], meter: FloatMeter | None) -> list:
    """Björck on every layer (``config``'s iterations and tolerance), counted by ``meter`` when given."""
    out = []
    for l, w in enumerate(ws):
        unchanged: list[bool] = []
        new = bjorck_torch(w, config.bjorck_iters, tol=config.bjorck_tol, used=iters_used, unchanged=unchanged)
        if meter is not None:
            meter.orthogonalize(l, w, new, iters_used[-1], unchanged[-1], config.bjorck_iters, config.bjorck_tol)
        out.append(new)
    return out


def restore_checkpoint(resume: dict, ws: list, config, is_foton: bool, dev):
    """Weights and FOTON's F from a ``checkpoint_state`` (sizes checked): returns (weights, config with F)."""
    flat = resume["w"]
    if flat.dtype != np.float32 or flat.shape != (sum(w.numel() for w in ws),):
        raise RunError(f"checkpoint does not match this run: w is {flat.dtype} {flat.shape}")
    restored, offset = [], 0
    for w in ws:
        restored.append(torch.as_tensor(flat[offset:offset + w.numel()].reshape(w.shape), device=dev).clone())
        offset += w.numel()
    if is_foton and resume["proj"].size:
        config = dataclasses.replace(config, projection=torch.as_tensor(resume["proj"], device=dev))
    return restored, config


def _restore_velocity(resume: dict, ws: list, velocity: list) -> list:
    """The momentum buffers from a checkpoint: all layers' or none (a run that had not stepped yet)."""
    flat = resume.get("velocity")
    if flat is None or flat.size == 0:
        return velocity
    if flat.shape != (sum(w.numel() for w in ws),):
        raise RunError(f"checkpoint does not match this run: velocity has {flat.shape[0]} values")
    restored, offset = [], 0
    for w in ws:
        restored.append(torch.as_tensor(flat[offset:offset + w.numel()].reshape(w.shape), device=w.device).clone())
        offset += w.numel()
    return restored
