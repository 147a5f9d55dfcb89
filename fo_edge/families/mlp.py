"""The MLP family: dense nets (``784-256-256-10``) on every device, spiking nets on spiking devices.

Backends: ``numba`` runs the bit-exact device kernels (engine.stream, spiking devices included); ``torch`` the float
reference (engine.torch_loop on float devices, engine.spiking_torch, snnTorch, on spiking ones). :func:`prepare`
validates a run and plans its device memory (engine.stream.plan_memory, on every backend); the lifecycle
(fo_edge.lifecycle) does the rest. weights.npz: ``W{l}`` (d_out, d_in) float32 and, on the Numba path, the
device store (rules.numba_binding).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import limits
from ..accounting.counters import counters_array
from ..accounting.energy import energy_of
from ..data import DATASETS, load_dataset
from ..device import DeviceProfile, load_device
from ..engine.health import TrainingStopped
from ..errors import ConfigError
from ..lifecycle import Training, skeleton
from ..models.mlp import ACTIVATIONS, init_weights, parse_model_spec
from ..rules import BACKENDS, RULES, rule_config
from ..rules.base import ERRORS
from ..rules.spiking_binding import (HIDDEN_ERRORS, SPIKING_ACTIVATION, SPIKING_DEFAULT_HIDDEN_ERROR,
                                     SPIKING_DEFAULT_LR, SPIKING_DEFAULT_MODEL, SPIKING_RULES)
from ..run_config import (DEFAULT_MODEL, SimulateConfig, check_pipeline, check_run_options, check_threads,
                          prepared_data)

__all__ = ["MLPRun", "prepare", "default_model", "saved_config"]




@dataclass
class MLPRun:
    """A prepared MLP or spiking run (lifecycle.PreparedRun)."""

    config: SimulateConfig
    backend: str
    record: dict
    total_samples: int
    device: DeviceProfile
    dims: tuple[int, ...]
    rcfg: object
    data: object

    def train(self, training: Training):
        weights = init_weights(self.dims, seed=self.config.seed, init=self.config.init)
        checkpointing = {k: v for k, v in training.keywords().items() if k != "on_batch"}
        *outcome, stopped = _train(self.config, self.backend, self.device, self.dims, self.rcfg, self.data, weights,
                                   training.on_batch, checkpointing, self.record["memory"])
        if stopped is not None:
            raise TrainingStopped(stopped, tuple(outcome))
        return tuple(outcome)

    def finish(self, record: dict, outcome, seconds: float, stopped) -> dict[str, np.ndarray]:
        history, stored, memory, counters, energy, warnings = outcome
        accuracy = history[-1]["test_accuracy"] if history and stopped is None else None
        best = max(history, key=lambda h: h["test_accuracy"]) if history else None
        n_train = len(self.data.x_train) * self.config.epochs
        record.update(status="complete", history=history, memory=memory, counters=counters, energy=energy,
                      warnings=warnings,
                      final={"test_accuracy": accuracy, "seconds": seconds,
                             # the reference's restore_best: reported beside, never instead of, the last epoch
                             "best_test_accuracy": best["test_accuracy"] if best else None,
                             "best_epoch": best["epoch"] if best else None,
                             "samples_per_s": counters.get("training_samples", n_train) / max(seconds, 1e-9)})
        return {k: np.asarray(v) for k, v in stored.items()}


def prepare(config: SimulateConfig) -> MLPRun:
    """Stages 1 and 2 of an MLP or spiking run: every option checked, the data loaded and matched to the model,
    the weights and the device's memory planned; a run that cannot fit is refused before anything is written."""
    config, device, dims, rcfg, backend = _validate(config)
    data = prepared_data(config)
    if dims[0] != data.n_features or dims[-1] < data.n_classes:
        raise ConfigError(f"--model {config.model} does not fit {data.name}: it needs {data.n_features} inputs "
                          f"and at least {data.n_classes} outputs (e.g. {data.n_features}-256-{data.n_classes})")
    _check_weight_memory(dims, device, backend)
    from ..engine.stream import plan_memory

    # the device's memory, whichever backend simulates it: the torch paths record this plan, the Numba path
    # allocates exactly it and records its own
    planned = plan_memory(dims, device, config.rule, config.batch_size, config.schedule,
                          ortho=getattr(rcfg, "ortho_every", 0) > 0, hidden_error=config.hidden_error,
                          dropout=config.dropout, momentum=config.momentum > 0 or config.weight_decay > 0).report()
    record = _record(config, dims, rcfg, device, data)
    record["memory"] = planned
    return MLPRun(config, backend, record, len(data.x_train) * config.epochs, device, dims, rcfg, data)


def saved_config(saved: dict) -> SimulateConfig:
    """The SimulateConfig an MLP run.json's ``config`` records (for --resume)."""
    names = {f.name for f in dataclasses.fields(SimulateConfig)}
    saved = dict(saved)
    options = saved.pop("rule_options", {})
    saved.pop("dims", None)
    if saved.get("activation") == SPIKING_ACTIVATION:  # recorded for the spiking device, which sets it again
        saved["activation"] = None
    return SimulateConfig(**{k: v for k, v in saved.items() if k in names}, rule_options=options)


def _validate(config: SimulateConfig) -> tuple[SimulateConfig, DeviceProfile, tuple[int, ...], object, str]:
    """Check every field; return the config with defaults filled in, the device, dims, rule config, backend."""
    if config.rule not in RULES:
        raise ConfigError(f"unknown rule {config.rule!r}; choose one of {', '.join(sorted(RULES))}")
    if config.data_dir is None and config.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)} or --data-dir")
    if config.activation is not None and config.activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {config.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if config.error not in ERRORS:
        raise ConfigError(f"unknown error {config.error!r}; choose one of {', '.join(ERRORS)}")
    if config.schedule not in ("stream", "store"):
        raise ConfigError(f"unknown schedule {config.schedule!r}; choose stream or store")
    check_run_options(config)
    for name in ("momentum", "weight_decay", "dropout"):
        limits.check(name, getattr(config, name))
    check_threads(config.threads)
    check_pipeline(config)
    lr = RULES[config.rule].default_lr if config.lr is None else config.lr
    dims = parse_model_spec(config.model)
    device = load_device(config.device)
    backend = config.backend or ("torch" if device.is_float else "numba")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        limits.check_torch_device(config.torch_device)
    if backend == "torch" and not device.is_float and device.spiking is None:
        raise ConfigError(f"--backend torch runs float devices only; {device.id} is {device.arithmetic.value}: "
                          f"use --backend numba")
    rcfg = rule_config(config.rule, **config.rule_options)
    activation = config.activation or RULES[config.rule].default_activation
    if device.spiking is not None:
        if config.rule not in SPIKING_RULES:
            raise ConfigError(f"{device.id} trains spiking nets with forward-only rules ({', '.join(SPIKING_RULES)}); "
                              f"{config.rule} needs a backward pass through the spike trains")
        if config.activation is not None:
            raise ConfigError(f"{device.id} is spiking: its neurons are CUBA-LIF, so --activation does not apply")
        activation = SPIKING_ACTIVATION
        lr = SPIKING_DEFAULT_LR[config.rule] if config.lr is None else lr
        if config.normalize != "none":
            raise ConfigError(f"{device.id} rate-codes pixel intensities in [0, 1]: --normalize {config.normalize} "
                              f"does not apply to spiking devices")
        hidden_error = config.hidden_error or SPIKING_DEFAULT_HIDDEN_ERROR
        if hidden_error not in HIDDEN_ERRORS:
            raise ConfigError(f"--hidden-error must be one of {', '.join(HIDDEN_ERRORS)}, got {hidden_error!r}")
    elif config.hidden_error is not None:
        raise ConfigError(f"--hidden-error applies to spiking devices only; {device.id} has no spikes")
    else:
        hidden_error = None
    if backend == "numba" or device.spiking is not None:
        if getattr(rcfg, "output_error", "clean") != "clean" and device.spiking is not None:
            raise ConfigError(f"PEPITA's output_error={rcfg.output_error} does not run on spiking devices; the "
                              f"{device.id} kernels use the clean pass's error")
        optimiser = [name for name in ("momentum", "weight_decay") if getattr(config, name)
                     and (device.spiking is not None or device.analog is not None)]
        if device.spiking is not None and config.dropout:
            optimiser.insert(0, "dropout")
        if optimiser:
            raise ConfigError(f"{optimiser[0].replace('_', ' ')} runs on the float torch path only (--backend torch on "
                              f"a float device); the {device.id} kernels apply plain SGD"
                              + (" and no dropout" if optimiser[0] == "dropout" else ""))
    filled = dataclasses.replace(config, lr=float(lr), backend=backend, activation=activation,
                                 hidden_error=hidden_error, lr_milestones=tuple(int(m) for m in config.lr_milestones))
    return filled, device, dims, rcfg, backend


def _check_weight_memory(dims, device: DeviceProfile, backend: str) -> None:
    """Refuse, before anything is allocated or written, weights that cannot fit: on the torch path (which has no
    arena) the float32 weights against the device's capacity, and on every path the host memory the weights
    and their float64 initialisation need against this machine's physical memory."""
    import os

    from ..accounting.memory import format_bytes
    from ..errors import DeviceMemoryError

    layers = [int(a) * int(b) for a, b in zip(dims[:-1], dims[1:])]
    weights = 4 * sum(layers)
    if backend == "torch" and weights > device.capacity.sram_bytes:
        raise DeviceMemoryError(f"does not fit in {device.id}'s memory: the float32 weights need "
                                f"{format_bytes(weights)} but its capacity is "
                                f"{format_bytes(device.capacity.sram_bytes)}; use a smaller model")
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = weights + 8 * max(layers)
    if need > host:
        raise ConfigError(f"--model needs {format_bytes(need)} of host memory for its weights and their "
                          f"initialisation; this machine has {format_bytes(host)}")


def _record(config: SimulateConfig, dims, rcfg, device: DeviceProfile, data) -> dict:
    """The run.json skeleton (lifecycle.skeleton) with the MLP run's config: every option, dims, rule options."""
    return skeleton({**{k: v for k, v in dataclasses.asdict(config).items() if k != "rule_options"},
                     "dims": list(dims),
                     "rule_options": {k: v for k, v in dataclasses.asdict(rcfg).items()
                                      if isinstance(v, (int, float, str, bool))}},
                    device, data.name, len(data.x_train), len(data.x_test), config.seed)


def default_model(config: SimulateConfig) -> str:
    """DEFAULT_MODEL (spiking devices: SPIKING_DEFAULT_MODEL), with its input and output widths taken from the
    dataset when that is not 28x28 with ten classes (``--dataset digits``: 64-256-256-10)."""
    base = SPIKING_DEFAULT_MODEL if load_device(config.device).spiking is not None else DEFAULT_MODEL
    if config.data_dir is None and config.dataset in ("mnist", "fashion-mnist"):
        return base
    data = load_dataset(config.dataset if config.data_dir is None else None, config.data_dir)
    return "-".join([str(data.n_features), *base.split("-")[1:-1], str(data.n_classes)])


def _train(config: SimulateConfig, backend: str, device: DeviceProfile, dims, rcfg, data, weights,
           on_batch, checkpointing: dict, planned: dict):
    """Run the training loop of ``backend`` on ``device``; returns (history, stored arrays, memory, counters,
    energy, warnings, the health stop or None). ``planned``: the device's memory plan (the torch paths' record,
    whose meters count what the Numba path's kernels count themselves)."""
    lr, stopped, meter = config.lr, None, None
    common = dict(error=config.error, lr=lr, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                  on_batch=on_batch, plan=config.plan(), **checkpointing)
    if backend == "torch" and device.spiking is not None:
        from ..accounting.spiking_float_counts import SpikingFloatMeter
        from ..engine.spiking_torch import train_spiking_torch

        meter = SpikingFloatMeter(dims, device, config.rule)
        run = lambda: train_spiking_torch(weights, data, config.rule, rcfg, device,  # noqa: E731
                                          device=config.torch_device, hidden_error=config.hidden_error,
                                          meter=meter, **common)
    elif backend == "torch":
        from ..accounting.float_counts import FloatMeter
        from ..engine.torch_loop import train_torch

        meter = FloatMeter(dims, device, config.rule, config.schedule)
        run = lambda: train_torch(weights, data, config.rule, rcfg, activation=config.activation,  # noqa: E731
                                  device=config.torch_device, momentum=config.momentum,
                                  weight_decay=config.weight_decay, dropout=config.dropout, meter=meter, **common)
    else:
        from ..engine.stream import train_stream

        run = lambda: train_stream(weights, data, config.rule, rcfg, device, activation=config.activation,  # noqa: E731
                                   schedule=config.schedule, hidden_error=config.hidden_error,
                                   dropout=config.dropout, momentum=config.momentum,
                                   weight_decay=config.weight_decay, **common)
    try:
        outcome = run()
    except TrainingStopped as stop:
        outcome, stopped = stop.outcome, stop.error
    if meter is not None:  # the torch paths: (final weights, history), counted by the meter
        final, history = outcome
        stored = {f"W{l}": w for l, w in enumerate(final)}
        memory, counters, warnings = planned, meter.record(), []
    else:
        history, stored, memory, counters = outcome.history, outcome.stored, outcome.memory, outcome.counters
        warnings = outcome.warnings
    energy = energy_of(counters, device.energy_pj)
    if device.spiking is not None:
        energy = _with_static(energy, counters, device, dims)
    return history, stored, memory, counters, energy, warnings, stopped


def _with_static(energy: dict, counters: dict, device: DeviceProfile, dims) -> dict:
    """Add the spiking time model's static energy (accounting.spiking_time) to an energy record."""
    from ..accounting.spiking_time import static_record
    from ..rules.spiking_binding import layer_cores

    energy["static"] = static_record(counters_array(counters), layer_cores(dims, device), device.spiking,
                                     device.energy_pj.get("static_mw", 0.0),
                                     training_samples=counters["training_samples"],
                                     inference_samples=counters["inference_samples"])
    energy["not_charged"] = [n for n in energy["not_charged"] if not n.startswith("static_mw")]
    return energy
