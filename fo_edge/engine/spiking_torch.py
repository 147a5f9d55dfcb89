"""The float reference of spiking training (snnTorch, CPU or CUDA): the same rules and schedule as the
device path (rules.spiking_binding), with float weights and exact (unrounded) updates; the step
(:class:`SpikingTorchStepper`) under engine.loop.run_epochs.

Per batch: clean run -> counts c_l, logits y, e; second run (FTP: inject -e G^T into layer 1; PEPITA / FOTON:
input rates clip(x +- e F, 0, 1)); g_l = delta_l^T h_{l-1} / (T^2 B), g_L = e^T c_{L-1} / (T B); W -= lr g, with
delta_l = c_l - c'_l (hidden_error "spike-count"), (c_l^- - c_l^+) / 2 from a third run with the opposite
modulation ("central") or 1[c_l + c'_l > 0] (A_l - A'_l), A_l the input integral
("surrogate"; rules.spiking_binding.HIDDEN_ERRORS).
FOTON refreshes F = W_L ... W_1 every ``refresh_every`` steps and runs Björck every ``ortho_every`` steps.
Checkpoints hold the stream engine's state keys (engine.torch_loop: ``w``, FOTON's ``proj``, ``position``,
``history``); a resumed run continues at the checkpoint's batch with the same weights, so on the same device and
threads it ends with the weights of an uninterrupted run. A ``meter`` (accounting.spiking_float_counts) counts
every presentation, update and Björck pass in the spiking kernels' schema; its counts travel in the checkpoints.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ..accounting.spiking_float_counts import SpikingFloatMeter
from ..data import Dataset
from ..device.spec import DeviceProfile
from ..kernels.counters import INFERENCE
from ..models.spiking import SpikingMLP
from ..rules import FORWARD_ONLY_UPDATES, bjorck_torch, projection_torch
from ..rules.base import output_error_torch
from ..rules.foton import FOTONConfig
from ..rules.ftp import ftp_feedback
from ..rules.pepita import pepita_feedback
from ..rules.spiking_passes import SpikingPasses
from .health import HealthConfig, NumericHealthError
from .loop import run_epochs
from .plan import BatchPlan
from .torch_loop import checkpoint_state, restore_checkpoint

__all__ = ["train_spiking_torch", "SpikingTorchStepper", "fixed_feedback", "spiking_updates", "surrogate_gradients"]


def train_spiking_torch(weights: list[np.ndarray], data: Dataset, rule: str, config, profile: DeviceProfile, *,
                        error: str, lr: float, epochs: int, batch_size: int, seed: int, device: str = "cpu",
                        on_batch: Callable[[int], None] | None = None,
                        plan: BatchPlan = BatchPlan(),
                        hidden_error: str | None = None, health: HealthConfig | None = None,
                        checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
                        resume: dict | None = None,
                        meter: SpikingFloatMeter | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """Train; returns the final weights (float32 numpy) and per-epoch metrics. ``plan``: batches and per-step lr
    (engine.plan); ``on_checkpoint(state)`` every ``checkpoint_every`` steps and after every epoch, ``resume``
    such a state (module docstring); ``health`` checks non-finite and exploding weights after every step;
    ``meter`` counts the work (module docstring). The epochs, batches, health checks and checkpoints are
    engine.loop's; :class:`SpikingTorchStepper` is the step."""
    stepper = SpikingTorchStepper(weights, data, rule, config, profile, error=error, lr=lr, batch_size=batch_size,
                                  device=device, plan=plan, hidden_error=hidden_error, meter=meter)
    return run_epochs(stepper, epochs=epochs, batch_size=batch_size, seed=seed, plan=plan, on_batch=on_batch,
                      health=health, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint, resume=resume)


class SpikingTorchStepper:
    """The float spiking step (engine.loop.Stepper): FOTON's F refresh, the rule's weight steps
    (:func:`spiking_updates`) applied, a non-finite check (a float run whose weights are no longer numbers
    stops, with or without a monitor), FOTON's Björck; a ``meter`` counts every presentation."""

    def __init__(self, weights: list[np.ndarray], data: Dataset, rule: str, config, profile: DeviceProfile, *,
                 error: str, lr: float, batch_size: int, device: str, plan: BatchPlan, hidden_error: str | None,
                 meter: SpikingFloatMeter | None):
        self.dev = dev = torch.device(device)
        self.ws = [torch.as_tensor(w, dtype=torch.float32, device=dev).clone() for w in weights]
        dims = tuple([int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights])
        self.timesteps = profile.spiking.timesteps
        self.temperature = getattr(config, "temperature", 1.0)
        self.proj = fixed_feedback(rule, dims, config, dev)  # FOTON's F: refreshed from the weights in the loop
        self.rule, self.config, self.is_foton = rule, config, isinstance(config, FOTONConfig)
        self.eye = torch.eye(dims[-1], device=dev)
        self.x_tr, self.y_tr = torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev)
        self.data, self.profile, self.error, self.lr, self.batch_size, self.plan = data, profile, error, lr, \
            batch_size, plan
        self.hidden_error, self.meter = hidden_error, meter
        self.net = SpikingMLP(self.ws, profile.spiking).to(dev)
        self.n_train, self.n_monitored = len(data.x_train), len(self.ws)

    def run(self, phase: int, x: torch.Tensor, inject: torch.Tensor | None = None):
        """One presentation, counted into ``phase`` when metered."""
        if self.meter is None:
            return self.net(x, inject=inject)
        active = [torch.zeros((), dtype=torch.int64, device=self.dev) for _ in self.ws[:-1]]
        out = self.net(x, inject=inject, active=active)
        self.meter.presentation(phase, self.ws, out[2], out[1], active)
        return out

    def start_epoch(self, epoch: int) -> None:
        pass

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        ws, meter, config = self.ws, self.meter, self.config
        rows = torch.as_tensor(idx, device=self.dev)
        x, t = self.x_tr[rows], self.eye[self.y_tr[rows]]
        lr_step = self.plan.step_lr(self.lr, epoch, len(idx), self.batch_size)
        if meter is not None:
            meter.begin_step()
        if self.is_foton and step % config.refresh_every == 0:
            self.proj = projection_torch(ws)
        steps_l, _ = spiking_updates(self.run, ws, x, t, self.rule, config, self.proj, error=self.error,
                                     temperature=self.temperature, hidden_error=self.hidden_error,
                                     timesteps=self.timesteps, lr=lr_step)
        n = len(idx)
        for l, delta_w in enumerate(steps_l):
            before = ws[l].clone() if meter is not None else None
            ws[l].sub_(delta_w)
            if meter is not None:
                meter.update(l, n, before, ws[l], False)
        if meter is not None:
            meter.trained += n
        bad = [l for l, w in enumerate(ws) if not bool(torch.isfinite(w).all())]
        if bad:
            raise NumericHealthError(f"numeric health: layer {bad[0] + 1} at step {step + 1}: non-finite weights on "
                                     f"the float spiking path; lower --lr", bad[0] + 1, step + 1, "non-finite")
        if self.is_foton and config.ortho_every and (step + 1) % config.ortho_every == 0:
            for l, w in enumerate(ws):
                used: list[int] = []
                unchanged: list[bool] = []
                new = bjorck_torch(w, config.bjorck_iters, used=used, unchanged=unchanged)
                if meter is not None:
                    meter.orthogonalize(l, w, new, used[-1], unchanged[-1], config.bjorck_iters, 0.0)
                w.copy_(new)

    def health(self) -> tuple[None, list]:
        return None, [w.detach().cpu().numpy() for w in self.ws]

    def evaluate(self, epoch: int) -> dict:
        data, meter, correct = self.data, self.meter, 0
        if meter is not None:
            meter.begin_step()  # the weights' nonzero counts of the trained net
        for begin in range(0, len(data.x_test), 1024):
            xb = torch.as_tensor(data.x_test[begin:begin + 1024], device=self.dev)
            correct += int((self.run(INFERENCE, xb)[0].argmax(1).cpu().numpy() == data.y_test[begin:begin + 1024])
                           .sum())
            if meter is not None:
                meter.inferred += len(xb)
        return {"test_accuracy": correct / max(len(data.x_test), 1)}

    def state(self) -> dict:
        foton = dataclasses.replace(self.config, projection=self.proj) \
            if self.is_foton and self.proj is not None else self.config  # F exists once a step has refreshed it
        return checkpoint_state(self.ws, foton, self.is_foton, [None] * len(self.ws), self.meter)

    def tallies(self) -> tuple[int, int]:
        return (self.meter.trained, self.meter.inferred) if self.meter is not None else (0, 0)

    def restore(self, resume: dict) -> None:
        ws, self.config = restore_checkpoint(resume, self.ws, self.config, self.is_foton, self.dev)
        for w, saved in zip(self.ws, ws):  # in place: the SpikingMLP holds these tensors
            w.copy_(saved)
        if self.is_foton and self.config.projection is not None:
            self.proj = self.config.projection
        if self.meter is not None and resume["counters"].size:
            self.meter.restore(resume["counters"].reshape(self.meter.shape.shape),
                               *(int(v) for v in resume["position"][3:5]))

    def outcome(self, history: list[dict], warnings: list[str]) -> tuple[list[np.ndarray], list[dict]]:
        return [w.cpu().numpy() for w in self.ws], history


def fixed_feedback(rule: str, dims, config, device="cpu") -> torch.Tensor | None:
    """The rule's fixed random feedback as float32: FTP's G (d_L, d_1) or PEPITA's F (d_L, d_0), drawn from the
    config's seed (rules.ftp, rules.pepita); None for FOTON, whose F = W_L ... W_1 follows the weights."""
    if rule == "ftp":
        return torch.tensor(ftp_feedback(dims, config), dtype=torch.float32, device=device)
    if rule == "pepita":
        return torch.tensor(pepita_feedback(dims, config), dtype=torch.float32, device=device)
    return None


def spiking_updates(run: Callable, ws: list[torch.Tensor], x: torch.Tensor, t: torch.Tensor, rule: str, config,
                    proj: torch.Tensor, *, error: str, temperature: float, hidden_error: str | None, timesteps: int,
                    lr: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One batch's weight steps of a forward-only rule on the float spiking net, none applied: (Delta W_l per
    layer, each shaped like W_l, the rule moves W_l -= Delta W_l; the output error g_L correlates, (B, d_L)).
    ``run(phase, x, inject=None)`` presents x (B, d_0) (``SpikingMLP.forward``, metered or not); x in [0, 1], t
    (B, d_L) one-hot; ``proj``: FTP's G, PEPITA's F or FOTON's F = W_L ... W_1. The rule is its one torch
    definition (rules.FORWARD_ONLY_UPDATES) over the spiking passes (rules.spiking_passes: Delta W_l =
    lr delta_l^T h_{l-1} / (T^2 B), the output's lr e^T c_{L-1} / (T B)). lr = 1 gives the rule's update
    direction (``fo-edge diagnose``)."""
    passes = SpikingPasses(run, len(ws), error, temperature, hidden_error, timesteps, lr)
    return FORWARD_ONLY_UPDATES[rule](passes, x, t, config, proj)


def surrogate_gradients(net: SpikingMLP, x: torch.Tensor, t: torch.Tensor, *, error: str,
                        temperature: float) -> list[torch.Tensor]:
    """BP's reference on the spiking net: dL/dW_l by backpropagation through time with snnTorch's surrogate spike
    derivative (``SpikingMLP.surrogate_logits``), L the rule's own loss on logits y (B, d_L): its gradient with
    respect to y is e / B, e = output_error_torch(y, t) (CE: softmax(y / temperature) - t; MSE: y - t), so the
    output layer's gradient is the rules' g_L up to the spikes of the last timestep. Returns one (d_l, d_{l-1})
    tensor per layer; the weights are not changed."""
    leaves = [w.detach().clone().requires_grad_(True) for w in net.weights]
    y = net.surrogate_logits(x, leaves)
    e = output_error_torch(y.detach(), t, error, temperature)
    grads = torch.autograd.grad(y, leaves, grad_outputs=e / len(x))
    return [g.detach() for g in grads]
