"""Training orthogonal conv nets (models.conv): FOTON or BP, on the PyTorch path or the Numba device path (the
step, :class:`ConvStepper`; engine.loop.run_epochs runs the epochs).

Per batch: the rule gives per-layer weight updates g_l (kernels for conv layers, the dense W last); the chain
rule through the BCOP construction maps them to the parameters (models.conv.param_grads), the SGD step
``theta <- theta - lr * g_theta`` is applied, and every ``ortho_every`` steps Björck re-orthonormalises every
BCOP factor and the dense W. FOTON recomputes F every ``refresh_every`` steps (stale in between). On the
Numba path the passes and the correlations run in the device's formats (rules.conv_binding); the parameters
stay on the host in float64 and the kernels are rewritten into the device after every step.

Checkpoints (``on_checkpoint(state)`` every ``checkpoint_every`` steps and after every epoch) hold the stream
engine's keys: ``w`` the BCOP parameters and dense W flat (float64, layer by layer, each layer's factors in name
order), ``proj`` F as it stands (stale between refreshes; empty before the first on the torch path),
``position`` (epoch, next batch start, step, samples trained, samples evaluated), ``history``; on the Numba path
also the device's store (``device_w``, ``w_exp``: each layer's exponent then its channels' offsets), ``rng`` and
``counters``. A run resumed from one continues bit for bit on the Numba path, and on the torch path with the
same weights on the same device and threads. ``health`` checks the parameters (non-finite, exploding) and, on
the Numba path, the counters (saturation storms, stalls) after every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..data import Dataset
from ..device.spec import DeviceProfile
from ..errors import ConfigError, RunError
from ..accounting.conv_float_counts import ConvFloatMeter
from ..kernels.counters import FORWARD, INFERENCE, UPDATE, new_counters
from ..kernels.rng import new_state
from ..models.conv import ConvSpec, conv_forward_torch, init_conv_params, kernels_of, orthonormalize_params, \
    param_grads
from ..rules import bjorck_torch
from ..rules.conv_binding import (ConvPasses, check_conv_exact, conv_predict, conv_to_device, foton_conv_step,
                                  projection_buffer, refresh_conv_projection, store_kernels)
from ..rules.foton import FOTONConfig
from ..rules.foton_conv import bp_conv_update_torch, conv_projection_torch, count_conv_pass, foton_conv_update_torch
from ..rules.numba_binding import make_params, quantize_input
from .health import HealthConfig
from .loop import run_epochs
from .plan import BatchPlan

__all__ = ["ConvTrainConfig", "ConvRun", "ConvStepper", "train_conv", "evaluate_conv_torch", "CONV_RULES"]

CONV_RULES = ("foton", "bp")


@dataclass(frozen=True)
class ConvTrainConfig:
    """rule: foton | bp; backend: torch | numba (FOTON only); ortho_every / bjorck_iters / refresh_every: the
    Björck and F schedules (FOTON's reference: 1 / 20 / 1); lr: SGD step on the BCOP parameters; temperature: the
    softmax T of the output error. Defaults lr 0.1, T 0.1: the best of seven (lr, T) pairs tried for
    c16-c32-10 on 20,000 MNIST samples, one epoch (README, "FOTON on convolutions")."""

    rule: str = "foton"
    activation: str = "tanh"
    error: str = "ce"
    lr: float = 0.1
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    backend: str = "torch"
    ortho_every: int = 1
    bjorck_iters: int = 20
    refresh_every: int = 1
    temperature: float = 0.1
    plan: BatchPlan = field(default_factory=BatchPlan)  # batches and per-step lr (engine.plan)

    def validate(self) -> None:
        if self.rule not in CONV_RULES:
            raise ConfigError(f"conv nets train with {' or '.join(CONV_RULES)}, not {self.rule!r}")
        if self.backend not in ("torch", "numba"):
            raise ConfigError(f"unknown backend {self.backend!r}; choose torch or numba")
        if self.backend == "numba" and self.rule != "foton":
            raise ConfigError("the Numba conv path runs FOTON (BP conv training is on the torch path)")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.refresh_every < 1 or self.ortho_every < 0:
            raise ConfigError("lr must be > 0; epochs, batch_size, refresh_every >= 1; ortho_every >= 0")


@dataclass
class ConvRun:
    """params: BCOP parameters and dense W (float64); history: per-epoch metrics; counters: the Numba path's
    (phases, L + 1, names) counters, or None on the torch path; trained / inferred: samples stepped on and
    evaluated; net: the Numba path's device store (rules.conv_binding.ConvDeviceNet) as training left it."""

    params: list
    history: list
    counters: np.ndarray | None
    trained: int = 0
    inferred: int = 0
    net: object = None

    def kernels(self, spec: ConvSpec) -> list[torch.Tensor]:
        return [k.detach() for k in kernels_of(spec, self.params)]


def evaluate_conv_torch(spec: ConvSpec, kernels, x: np.ndarray, y: np.ndarray, activation: str,
                        chunk: int = 2048, meter: ConvFloatMeter | None = None) -> float:
    """Top-1 accuracy of the conv net (float32) on x (N, d_0), y (N,); ``meter`` counts it as inference."""
    ws = [k.float() for k in kernels]
    correct = 0
    with torch.no_grad():
        if meter is not None:
            meter.begin_step()
        for start in range(0, len(x), chunk):
            logits, inputs, outs = conv_forward_torch(spec, ws, torch.as_tensor(x[start:start + chunk]), activation,
                                                      keep=True)
            if meter is not None:
                count_conv_pass(meter, INFERENCE, spec, ws, inputs, outs)
            correct += int((logits.argmax(1).numpy() == y[start:start + chunk]).sum())
    if meter is not None:
        meter.inferred += len(x)
    return correct / max(len(x), 1)


def train_conv(spec: ConvSpec, data: Dataset, config: ConvTrainConfig, profile: DeviceProfile | None = None,
               on_epoch: Callable[[dict], None] | None = None,
               on_batch: Callable[[int], None] | None = None, *, health: HealthConfig | None = None,
               checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
               resume: dict | None = None, meter: ConvFloatMeter | None = None) -> ConvRun:
    """Train the conv net on ``data`` (x: (N, C*H*W) in [0, 1]); see the module docstring. A health stop raises
    engine.health.TrainingStopped carrying the ConvRun so far. ``meter`` counts a torch-path run in the device
    kernels' schema (accounting.conv_float_counts; the Numba path counts itself). The epochs, batches, health
    checks and checkpoints are engine.loop's; :class:`ConvStepper` is the step."""
    config.validate()
    if config.backend == "numba" and profile is None:
        raise ConfigError("the Numba conv path needs a device profile")
    stepper = ConvStepper(spec, data, config, profile, meter)
    return run_epochs(stepper, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                      plan=config.plan, on_batch=on_batch, health=health, checkpoint_every=checkpoint_every,
                      on_checkpoint=on_checkpoint, resume=resume, on_epoch=on_epoch)


class ConvStepper:
    """A conv net's step (engine.loop.Stepper): the rule's per-layer updates (the device's passes on the Numba
    path, torch's otherwise), mapped through BCOP to the parameters, SGD, Björck on its schedule, the kernels
    written back into the device (or counted by the meter)."""

    def __init__(self, spec: ConvSpec, data: Dataset, config: ConvTrainConfig, profile: DeviceProfile | None,
                 meter: ConvFloatMeter | None):
        self.spec, self.data, self.config = spec, data, config
        self.params = init_conv_params(spec, config.seed)
        self.eye = np.eye(spec.n_classes)
        # calibrated from the initial parameters, as in the uninterrupted run; a checkpoint then overwrites the store
        self.device = _NumbaConv(spec, self.params, profile, config) if config.backend == "numba" else None
        self.meter = meter if self.device is None else None
        self.proj, self.trained, self.inferred = None, 0, 0
        self.n_train, self.n_monitored = len(data.x_train), spec.n_layers

    def start_epoch(self, epoch: int) -> None:
        pass

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        spec, config, device, meter = self.spec, self.config, self.device, self.meter
        lr = config.plan.step_lr(config.lr, epoch, len(idx), config.batch_size)
        x, t = self.data.x_train[idx], self.eye[self.data.y_train[idx]]
        refresh = config.rule == "foton" and step % config.refresh_every == 0
        if device is not None:
            grads = device.updates(x, t, refresh)
        else:
            kernels = [k.detach().float() for k in kernels_of(spec, self.params)]
            if meter is not None:
                meter.begin_step()
                if refresh:
                    meter.conv_refresh()
            grads, self.proj = _torch_updates(spec, kernels, x, t, config, self.proj, refresh, meter)
        pg = param_grads(spec, self.params, [torch.as_tensor(g, dtype=torch.float64) for g in grads])
        params = [{k: v - lr * pg[l][k] for k, v in p.items()} for l, p in enumerate(self.params)]
        if config.ortho_every and (step + 1) % config.ortho_every == 0:
            params = orthonormalize_params(params, bjorck_torch, config.bjorck_iters)
        self.params = params
        if device is not None:
            device.store(params)
        elif meter is not None:  # the kernels written back into the device
            meter.written(kernels, [k.detach().float() for k in kernels_of(spec, params)])
            meter.trained += len(idx)
        self.trained += len(idx)

    def health(self) -> tuple[np.ndarray | None, list]:
        return self.device.counters if self.device is not None else None, [_flat([p]) for p in self.params]

    def evaluate(self, epoch: int) -> dict:
        data = self.data
        accuracy = self.device.accuracy(data.x_test, data.y_test) if self.device is not None else \
            evaluate_conv_torch(self.spec, kernels_of(self.spec, self.params), data.x_test, data.y_test,
                                self.config.activation, meter=self.meter)
        self.inferred += len(data.x_test)
        return {"test_accuracy": accuracy}

    def state(self) -> dict:
        state = _state(self.params, self.proj, self.device)
        if self.meter is not None:
            state["counters"] = self.meter.counts().reshape(-1)
        return state

    def tallies(self) -> tuple[int, int]:
        return self.trained, self.inferred

    def restore(self, resume: dict) -> None:
        self.params, self.proj = _restore(resume, self.params, self.device)
        self.trained, self.inferred = (int(v) for v in resume["position"][3:5])
        if self.meter is not None and resume["counters"].size:
            self.meter.restore(resume["counters"].reshape(self.meter.shape.shape), self.trained, self.inferred)

    def outcome(self, history: list[dict], warnings: list[str]) -> ConvRun:
        device, meter = self.device, self.meter
        counters = device.counters if device is not None else meter.counts() if meter is not None else None
        return ConvRun(self.params, history, counters, self.trained, self.inferred,
                       device.net if device is not None else None)


def _flat(params: list[dict]) -> np.ndarray:
    """The parameters flat, float64: layer by layer, each layer's tensors in name order."""
    return np.concatenate([params[l][k].detach().numpy().ravel() for l in range(len(params))
                           for k in sorted(params[l])]).astype(np.float64)


def _state(params: list[dict], proj, device: "_NumbaConv | None") -> dict:
    """A checkpoint's engine arrays (module docstring; engine.loop adds ``position`` and ``history``)."""
    state = {"w": _flat(params), "rng": np.zeros(0, dtype=np.uint64),
             "counters": np.zeros(0, dtype=np.int64),
             "proj": np.zeros(0, dtype=np.float32) if proj is None else proj.detach().numpy().copy()}
    if device is not None:
        net = device.net
        state.update(proj=device.proj.copy(), rng=device.rng.copy(), counters=device.counters.copy(),
                     device_w=net.w.copy(), w_exp=np.concatenate([net.w_frac, *net.row_shift]).astype(np.int64))
    return state


def _restore(state: dict, template: list[dict], device: "_NumbaConv | None"):
    """Parameters (shaped as ``template``) and F from a ``_state``; the device's store, RNG
    and counters restored in place. Sizes are checked: a checkpoint of another model raises RunError."""
    flat = state["w"]
    if flat.dtype != np.float64 or flat.shape != _flat(template).shape:
        raise RunError(f"checkpoint does not match this conv run: w is {flat.dtype} {flat.shape}")
    params, offset = [], 0
    for layer in template:
        restored = {}
        for key in sorted(layer):
            size = layer[key].numel()
            restored[key] = torch.tensor(flat[offset:offset + size].reshape(tuple(layer[key].shape)))
            offset += size
        params.append(restored)
    proj = None
    if device is not None:
        net = device.net
        exps = state.get("w_exp")
        shapes_ok = (state.get("device_w") is not None and state["device_w"].shape == net.w.shape
                     and exps is not None and exps.size == len(net.w_frac) + sum(r.size for r in net.row_shift)
                     and state["proj"].shape == device.proj.shape and state["counters"].shape == device.counters.shape
                     and state["rng"].shape == device.rng.shape)
        if not shapes_ok:
            raise RunError("checkpoint does not match this conv run's device store")
        net.w[:] = state["device_w"]
        net.w_frac[:] = exps[:len(net.w_frac)]
        if net.quantized:
            net.w_one[:] = 2 ** net.w_frac
        offset = len(net.w_frac)
        for rows in net.row_shift:
            rows[:] = exps[offset:offset + rows.size]
            offset += rows.size
        device.proj[:] = state["proj"]
        device.rng[:] = state["rng"]
        device.counters[:] = state["counters"]
    elif state["proj"].size:
        proj = torch.as_tensor(state["proj"])
    return params, proj


def _torch_updates(spec, kernels, x, t, config: ConvTrainConfig, proj, refresh: bool, meter=None):
    xt, tt = torch.as_tensor(x), torch.as_tensor(t, dtype=torch.float32)
    if config.rule == "bp":
        return bp_conv_update_torch(spec, kernels, xt, tt, activation=config.activation, error=config.error,
                                    temperature=config.temperature, meter=meter), proj
    if refresh or proj is None:
        proj = conv_projection_torch(spec, kernels)
    rule_config = replace(FOTONConfig(), temperature=config.temperature, projection=proj)
    return foton_conv_update_torch(spec, kernels, xt, tt, activation=config.activation, error=config.error,
                                   config=rule_config, meter=meter), proj


class _NumbaConv:
    """The device side of a Numba conv run: weight store, pass workspace, F, counters and RNG."""

    def __init__(self, spec: ConvSpec, params, profile: DeviceProfile, config: ConvTrainConfig):
        check_conv_exact(spec, profile, config.batch_size)
        self.spec, self.profile = spec, profile
        self.net = conv_to_device(spec, [k.detach().numpy() for k in kernels_of(spec, params)], profile)
        self.passes = ConvPasses(self.net, config.batch_size)
        self.params = make_params(profile, config.activation, config.error, config.temperature, collect=True)
        self.proj = projection_buffer(self.net, profile)
        self.counters = new_counters(spec.n_layers)
        self.rng = new_state(config.seed)
        self.fracs = (0, 0) if profile.is_float else (profile.activation.frac_bits, profile.error.frac_bits)

    def updates(self, x: np.ndarray, t: np.ndarray, refresh: bool) -> list[np.ndarray]:
        if refresh:
            refresh_conv_projection(self.net, self.proj, self.profile, self.counters)
        x_dev = quantize_input(x, self.profile, self.passes.x, self.counters[FORWARD, self.spec.n_layers], self.rng)
        return foton_conv_step(self.passes, self.profile, self.params, x_dev, t, self.proj, self.counters,
                               self.rng, self.fracs)

    def store(self, params) -> None:
        kernels = [k.detach().numpy() for k in kernels_of(self.spec, params)]
        store_kernels(self.net, kernels, self.profile, self.counters[UPDATE, self.spec.n_layers])

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        labels = conv_predict(self.passes, self.profile, self.params, x, self.counters, self.rng)
        return float(np.mean(labels == y)) if len(y) else 0.0
