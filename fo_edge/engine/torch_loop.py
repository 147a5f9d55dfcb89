"""The float reference training loop (PyTorch, CPU or CUDA).

Per batch: ``g = rule.update_torch(W, x, t)``, then SGD as PyTorch defines it: with weight decay wd and
momentum mu, ``d_l = g_l + wd W_l``, ``v_l <- mu v_l + d_l`` (v_l = d_l on the first step), ``W_l <- W_l - lr v_l``
(mu = wd = 0: ``W_l <- W_l - lr g_l``). FOTON additionally re-orthogonalises every ``ortho_every`` steps and
refreshes its projection F every ``refresh_every`` steps. Dropout (probability p) draws one inverted-dropout
mask per hidden layer and batch from a generator seeded by (seed, step) and shares it between the rule's
passes. The batches, their order and the per-step lr come from :class:`fo_edge.engine.plan.BatchPlan`.
Checkpoints, resume and the weight health checks follow the stream engine's conventions. A ``meter``
(accounting.float_counts.FloatMeter) counts the run in the device kernels' schema: the rule's passes, each
update's writes, Björck, F's refresh and every evaluation; its counts travel in the checkpoints.
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
from ..accounting.float_counts import NO_METER, FloatMeter
from ..kernels.counters import INFERENCE
from ..models.mlp import activate_torch
from ..rules import RULES, bjorck_torch, projection_torch
from ..rules.foton import FOTONConfig
from .health import HealthConfig, HealthMonitor, NumericHealthError, TrainingStopped
from .plan import BatchPlan, epoch_order

__all__ = ["train_torch", "evaluate_torch", "epoch_order", "dropout_masks", "checkpoint_state", "restore_checkpoint"]


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
    """Train in float32 on ``device``; returns the final weights (numpy float32) and per-epoch metrics.

    Checkpoints and ``resume`` use the stream engine's state keys (``w`` flat float32, ``proj`` FOTON's F,
    ``position``, ``history``, ``velocity``, the momentum buffers, flat, and ``counters``, the meter's counts
    (empty without a meter); ``rng`` is empty: the dropout masks are seeded by the step). ``health`` checks non-finite
    and exploding weights after every step; a stop raises :class:`TrainingStopped` carrying (weights, history).
    ``on_step(step, ws, x, t, config)`` sees each batch before its update (diagnostics). Each epoch's record
    has the test accuracy, the lr, and for FOTON with a Björck tolerance the mean iterations per call.
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
    dims = [ws[0].shape[1]] + [w.shape[0] for w in ws]
    velocity: list[torch.Tensor | None] = [None] * len(ws)
    step, history, first_epoch, first_begin = 0, [], 0, 0
    if resume is not None:
        ws, config, (first_epoch, first_begin, step), history = restore_checkpoint(resume, ws, config, is_foton,
                                                                                   dev)
        velocity = _restore_velocity(resume, ws, velocity)
        if meter is not None and resume["counters"].size:
            meter.restore(resume["counters"].reshape(meter.shape.shape), *(int(v) for v in resume["position"][3:5]))
    monitor = HealthMonitor(health, len(ws)) if health is not None else None
    tally = meter if meter is not None else NO_METER

    def state(epoch: int, begin: int) -> dict:
        return checkpoint_state(ws, config, is_foton, velocity, epoch, begin, step, history, meter)

    for epoch in range(first_epoch, epochs):
        start = time.perf_counter()
        order = torch.as_tensor(epoch_order(len(x_tr), seed, epoch), device=dev)
        iters_used: list[int] = []
        for begin in plan.starts(len(order), batch_size, first_begin if epoch == first_epoch else 0):
            idx = order[begin:begin + batch_size]
            x, t = x_tr[idx], eye[y_tr[idx]]
            if is_foton and step % config.refresh_every == 0:
                config = dataclasses.replace(config, projection=projection_torch(ws))
                tally.refresh()
            if on_step is not None:
                on_step(step, ws, x, t, config)
            masks = dropout_masks(dims, len(idx), dropout, seed, step, dev)
            tally.begin_step()
            grads = spec.update_torch(ws, x, t, activation=activation, error=error, config=config,
                                      masks=masks, meter=tally)
            step_lr = plan.step_lr(lr, epoch, len(idx), batch_size)
            for l, (w, g) in enumerate(zip(ws, grads)):
                if weight_decay:
                    g = g + weight_decay * w
                if momentum:
                    velocity[l] = g.clone() if velocity[l] is None else velocity[l].mul_(momentum).add_(g)
                    g = velocity[l]
                if meter is None:
                    w.sub_(step_lr * g)
                else:
                    ws[l] = w - step_lr * g
                    meter.update(l, len(idx), w, ws[l], bool(momentum or weight_decay))
            step += 1
            if meter is not None:
                meter.trained += len(idx)
            if is_foton and config.ortho_every and step % config.ortho_every == 0:
                ws = _orthogonalize(ws, config, iters_used, meter)
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
        record = {"epoch": epoch + 1, "steps": step,
                  "test_accuracy": evaluate_torch(ws, x_te, y_te, activation, meter=meter),
                  "seconds": seconds, "samples_per_s": len(order) / max(seconds, 1e-9),
                  "lr": plan.epoch_lr(lr, epoch)}
        if iters_used and config.bjorck_tol > 0:
            record["bjorck_iters_mean"] = float(np.mean(iters_used))
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if on_checkpoint is not None and checkpoint_every:
            on_checkpoint(state(epoch + 1, 0))
    return [w.cpu().numpy() for w in ws], history


def checkpoint_state(ws: list, config, is_foton: bool, velocity: list, epoch: int, begin: int, step: int,
                     history: list, meter: FloatMeter | None = None) -> dict:
    """A float run's checkpoint in the stream engine's state keys: ``w`` the weights flat (float32), ``proj``
    FOTON's F (else empty), ``velocity`` the momentum buffers flat (empty before the first step or without
    momentum), ``counters`` the meter's counts flat (empty without one), ``position`` (epoch, next batch start,
    step, samples trained, samples evaluated), ``history``; ``rng`` empty."""
    proj = config.projection if is_foton and config.projection is not None else torch.zeros(0)
    moving = [v for v in velocity if v is not None]
    return {"w": torch.cat([w.reshape(-1) for w in ws]).cpu().numpy(), "rng": np.zeros(0, dtype=np.uint64),
            "counters": meter.counts().reshape(-1) if meter is not None else np.zeros(0, dtype=np.int64),
            "proj": proj.cpu().numpy().astype(np.float32),
            "velocity": torch.cat([v.reshape(-1) for v in moving]).cpu().numpy() if moving
            else np.zeros(0, dtype=np.float32),
            "position": np.array([epoch, begin, step, meter.trained if meter else 0, meter.inferred if meter else 0],
                                 dtype=np.int64),
            "history": np.array(json.dumps(history))}


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
    """Weights, FOTON's F and the loop position from a ``checkpoint_state`` (sizes checked): returns
    (weights, config with F, (epoch, next batch start, step), history)."""
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
