"""The Python API: :func:`simulate` trains a model under a device model and records the run.

``simulate(rule="ftp", device="mcu-int8", ...)`` (or ``simulate(SimulateConfig(...))``) validates every input
before work starts, trains on the chosen backend, writes ``RUN_DIR/run.json`` and ``weights.npz``
atomically, and returns a :class:`SimulateResult`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import limits
from .accounting.counters import counters_array
from .accounting.energy import energy_record
from .data import DATASETS, load_dataset
from .device import DeviceProfile, device_text, load_device
from .engine.health import HealthConfig, TrainingStopped
from .engine.plan import BatchPlan
from .engine.threads import kernel_threads
from .errors import ConfigError, RunError, RunInterrupted
from .models.conv import is_conv_spec, parse_conv_spec
from .models.mlp import ACTIVATIONS, INITS, init_weights, parse_model_spec
from .rules import BACKENDS, RULES, rule_config
from .rules.base import ERRORS
from .rules.spiking_binding import (HIDDEN_ERRORS, SPIKING_ACTIVATION, SPIKING_DEFAULT_HIDDEN_ERROR,
                                    SPIKING_DEFAULT_LR, SPIKING_DEFAULT_MODEL, SPIKING_RULES)
from .runs import (SCHEMA_VERSION, load_checkpoint, package_versions, prepare_run_dir, read_run, save_checkpoint,
                   save_weights, write_file_atomic, write_json_atomic)

__all__ = ["SimulateConfig", "SimulateResult", "simulate", "default_run_dir", "energy_report", "export_model",
           "DemoResult", "demo", "DEMO_MODEL", "diagnose"]


#: the model ``fo-edge simulate`` trains when --model is not given (spiking devices: SPIKING_DEFAULT_MODEL)
DEFAULT_MODEL = "784-256-256-10"


@dataclass(frozen=True)
class SimulateConfig:
    """Everything a run needs. ``backend=None`` picks torch for float devices and numba otherwise;
    ``lr=None`` / ``activation=None`` take the rule's defaults; ``model=None`` is DEFAULT_MODEL (spiking
    devices: rules.spiking_binding.SPIKING_DEFAULT_MODEL), ``hidden_error=None`` SPIKING_DEFAULT_HIDDEN_ERROR;
    ``limit`` caps the number of training (and test) samples; ``schedule`` is the Numba path's
    ``stream`` (no stored activations, 3 passes) or ``store`` (2 passes, pass-1 activations kept);
    ``checkpoint_every`` steps between checkpoints (0: none); ``on_unhealthy`` "stop" or "warn", with
    ``saturation_limit`` and ``stall_steps`` the health thresholds (engine.health)."""

    rule: str = "ftp"
    device: str = "loihi-like"
    dataset: str = "mnist"
    data_dir: str | None = None
    model: str | None = None
    activation: str | None = None
    error: str = "ce"
    epochs: int = 1
    batch_size: int = 32
    lr: float | None = None
    seed: int = 0
    limit: int | None = None
    out: str | None = None
    backend: str | None = None
    schedule: str = "stream"
    torch_device: str = "cpu"
    checkpoint_every: int = 500
    on_unhealthy: str = "stop"
    saturation_limit: float = 0.5
    stall_steps: int = 500
    rule_options: dict[str, Any] = field(default_factory=dict)
    normalize: str = "none"
    drop_last: bool = False
    batch_divisor: str = "actual"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    dropout: float = 0.0
    init: str = "orthogonal"
    recipe: str | None = None
    hidden_error: str | None = None
    overwrite: bool = False
    threads: int | None = None

    def plan(self) -> BatchPlan:
        """The batches and per-step learning rate these options ask for (engine.plan)."""
        return BatchPlan(self.drop_last, self.batch_divisor, tuple(self.lr_milestones), self.lr_gamma)


#: SimulateConfig fields that shape the data pipeline and optimiser (recipes set them; module docstring of
#: engine.plan and engine.torch_loop): normalize "none" keeps pixels in [0, 1], "standard" subtracts the
#: training split's mean and divides by its standard deviation (MNIST: 0.1307 / 0.3081)
NORMALIZATIONS = ("none", "standard")


@dataclass
class SimulateResult:
    """accuracy: final test accuracy in [0, 1]; history: per-epoch metrics; run_dir: where run.json lives;
    memory: peak device bytes by category (Numba path) and the capacity; record: the whole run.json."""

    accuracy: float
    history: list[dict]
    run_dir: Path
    memory: dict
    record: dict


def default_run_dir(config: SimulateConfig) -> Path:
    """``runs/<rule>-<device>-<timestamp>`` under the current directory (``-2``, ``-3``, ... appended when runs
    start within the same second, so a default directory never holds another run)."""
    device = Path(config.device).stem
    base = Path("runs") / f"{config.rule}-{device}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


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
    _check_run_options(config)
    for name in ("momentum", "weight_decay", "dropout", "threads"):
        limits.check(name, getattr(config, name))
    _validate_threads(config.threads)
    _validate_pipeline(config)
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

    from .accounting.memory import format_bytes
    from .errors import DeviceMemoryError

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


def _check_run_options(config: SimulateConfig) -> None:
    """The options every model family shares, each in its range: schedule of steps, seed, data cap, lr and its
    decay, checkpoints and the health thresholds."""
    for name in ("epochs", "batch_size", "seed", "limit", "checkpoint_every", "stall_steps", "saturation_limit",
                 "lr", "lr_gamma"):
        limits.check(name, getattr(config, name))
    if config.on_unhealthy not in ("stop", "warn"):
        raise ConfigError(f"--on-unhealthy must be stop or warn, got {config.on_unhealthy!r}")


def _validate_threads(threads: int | None) -> None:
    """--threads may not exceed the cores this process may use (Numba's thread pool)."""
    from .engine.threads import available_threads

    if threads is not None and threads > available_threads():
        raise ConfigError(f"--threads {threads}: this machine gives the process {available_threads()} core(s); "
                          f"use at most that many")


def _validate_pipeline(config: SimulateConfig) -> None:
    """The data-pipeline and optimiser fields (one line each, before anything is written)."""
    if config.init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {config.init!r}")
    if config.normalize not in NORMALIZATIONS:
        raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {config.normalize!r}")
    if any(not isinstance(m, int) or isinstance(m, bool) for m in config.lr_milestones):
        raise ConfigError(f"--lr-milestones must be epoch numbers, got {list(config.lr_milestones)}")
    if any(m > config.epochs for m in config.lr_milestones):
        raise ConfigError(f"--lr-milestones {list(config.lr_milestones)} lie beyond --epochs {config.epochs}")
    config.plan()  # BatchPlan checks the divisor, milestone order and gamma


def _prepared_data(config: SimulateConfig):
    """The dataset of a run, standardised when ``config.normalize == "standard"`` (statistics of the whole
    training split, before ``limit``), then limited."""
    data = load_dataset(config.dataset if config.data_dir is None else None, config.data_dir)
    if config.normalize == "standard":
        data = data.standardized()
    return data.limited(config.limit)


def _record(config: SimulateConfig, dims, rcfg, device: DeviceProfile, data, status: str) -> dict:
    """The run.json skeleton: everything known before training (a killed run leaves at least this)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "config": {**{k: v for k, v in dataclasses.asdict(config).items() if k != "rule_options"},
                   "dims": list(dims),
                   "rule_options": {k: v for k, v in dataclasses.asdict(rcfg).items()
                                    if isinstance(v, (int, float, str, bool))}},
        "device": {"id": device.id, "name": device.name, "path": device.path,
                   "arithmetic": device.arithmetic.value, "energy_pj": dict(device.energy_pj),
                   "capacity": {"sram_bytes": device.capacity.sram_bytes,
                                "flash_bytes": device.capacity.flash_bytes}},
        "dataset": {"name": data.name, "n_train": int(len(data.x_train)), "n_test": int(len(data.x_test))},
        "history": [], "final": {}, "memory": {}, "counters": {}, "energy": None, "warnings": [],
        "seed": config.seed, "versions": package_versions(),
    }


def _default_model(config: SimulateConfig) -> str:
    """DEFAULT_MODEL (spiking devices: SPIKING_DEFAULT_MODEL), with its input and output widths taken from the
    dataset when that is not 28x28 with ten classes (``--dataset digits``: 64-256-256-10)."""
    base = SPIKING_DEFAULT_MODEL if load_device(config.device).spiking is not None else DEFAULT_MODEL
    if config.data_dir is None and config.dataset in ("mnist", "fashion-mnist"):
        return base
    data = load_dataset(config.dataset if config.data_dir is None else None, config.data_dir)
    return "-".join([str(data.n_features), *base.split("-")[1:-1], str(data.n_classes)])


def _resume_config(run_dir) -> tuple[SimulateConfig, dict | None, str | None]:
    """The config of an unfinished run, its last checkpoint (None if it was killed before the first) and its run
    id; a checkpoint written by another run (its run_id differs from run.json's) is refused."""
    record = read_run(run_dir)
    if record.get("status") == "complete":
        raise ConfigError(f"--resume {run_dir}: the run is already complete")
    names = {f.name for f in dataclasses.fields(SimulateConfig)}
    if record["config"].get("conv"):  # the simulate options it was started with, as given
        saved = record["config"].get("simulate")
        if not isinstance(saved, dict):
            raise ConfigError(f"--resume {run_dir}: this conv run was recorded before conv runs had checkpoints; "
                              f"start it again")
        config = SimulateConfig(**{k: v for k, v in saved.items() if k in names})
    else:
        saved = dict(record["config"])
        options = saved.pop("rule_options", {})
        saved.pop("dims", None)
        if saved.get("activation") == SPIKING_ACTIVATION:  # recorded for the spiking device, which sets it again
            saved["activation"] = None
        config = SimulateConfig(**{k: v for k, v in saved.items() if k in names}, rule_options=options)
    checkpoint, run_id = load_checkpoint(run_dir), record.get("run_id")
    if checkpoint is not None:
        owner = str(checkpoint["run_id"]) if "run_id" in checkpoint else None
        if owner != run_id:
            raise RunError(f"--resume {run_dir}: checkpoint.npz belongs to another run (run id {owner}) than "
                           f"run.json ({run_id}); start again with --overwrite")
        if "config_sha" in checkpoint and str(checkpoint["config_sha"]) != _digest(record["config"]):
            raise RunError(f"--resume {run_dir}: checkpoint.npz was written for another configuration than "
                           f"run.json records (run.json was edited?); start again with --overwrite")
        if "w_sha" in checkpoint and str(checkpoint["w_sha"]) != _digest(checkpoint["w"]):
            raise RunError(f"--resume {run_dir}: checkpoint.npz's weights do not match their fingerprint (the file "
                           f"is damaged); start again with --overwrite")
    return dataclasses.replace(config, out=str(run_dir)), checkpoint, run_id


def _digest(value) -> str:
    """SHA-256 of a JSON-able record (sorted keys) or of an array's bytes: the fingerprints in a checkpoint."""
    import hashlib

    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _fingerprinted(state: dict, run_id: str, config_sha: str) -> dict:
    """A checkpoint's arrays with the run's id and the fingerprints of its config (as run.json holds it) and
    weights: --resume checks all three."""
    return {**state, "run_id": np.array(run_id), "config_sha": np.array(config_sha),
            "w_sha": np.array(_digest(state["w"]))}


def simulate(config: SimulateConfig | None = None, *, on_batch: Callable[[int], None] | None = None,
             on_start: Callable[[int], None] | None = None, resume: str | Path | None = None,
             **overrides) -> SimulateResult:
    """Train ``config.model`` with ``config.rule`` on ``config.device``; see the module docstring.

    ``on_start(total_samples)`` and ``on_batch(n_samples)`` let a caller show progress. ``resume=RUN_DIR``
    continues an interrupted run from its last checkpoint (same config; bit-identical weights on the numba
    path, and on the torch path for the same device and thread count).
    """
    checkpoint, run_id = None, None
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError(f"resume={resume} continues a run with the options it was started with; pass no "
                              f"config or options beside it ({', '.join(sorted(overrides)) or 'a config'} given)")
        config, checkpoint, run_id = _resume_config(resume)
    else:
        config = dataclasses.replace(config or SimulateConfig(), **overrides)
    if config.model is None:
        config = dataclasses.replace(config, model=_default_model(config))
    if is_conv_spec(config.model):
        return _simulate_conv(config, on_batch, on_start, resume is not None, checkpoint, run_id)
    config, device, dims, rcfg, backend = _validate(config)
    data = _prepared_data(config)
    if dims[0] != data.n_features or dims[-1] < data.n_classes:
        raise ConfigError(f"--model {config.model} does not fit {data.name}: it needs {data.n_features} inputs "
                          f"and at least {data.n_classes} outputs (e.g. {data.n_features}-256-{data.n_classes})")
    _check_weight_memory(dims, device, backend)
    from .engine.stream import plan_memory

    # the device's memory, whichever backend simulates it: a model that cannot fit is refused before anything is
    # written, and the torch paths record this plan (the Numba path allocates exactly it and records its own)
    planned = plan_memory(dims, device, config.rule, config.batch_size, config.schedule,
                          ortho=getattr(rcfg, "ortho_every", 0) > 0, hidden_error=config.hidden_error,
                          dropout=config.dropout, momentum=config.momentum > 0 or config.weight_decay > 0).report()
    run_dir = prepare_run_dir(config.out or default_run_dir(config),
                              "resume" if resume is not None else "replace" if config.overwrite else "refuse")
    record = _record(config, dims, rcfg, device, data, "running")
    record["run_id"] = run_id or uuid.uuid4().hex  # ties the checkpoints to this run (--resume checks it)
    device_toml = device_text(config.device)[0].encode()
    write_file_atomic(run_dir / "device.toml", lambda handle: handle.write(device_toml))
    if checkpoint is None:
        write_json_atomic(run_dir / "run.json", record)
    config_sha = _digest(read_run(run_dir)["config"])  # as run.json holds it: what --resume will compare
    weights = init_weights(dims, seed=config.seed, init=config.init)
    if on_start is not None:
        on_start(len(data.x_train) * config.epochs)
    started = time.perf_counter()
    health = HealthConfig(config.on_unhealthy, config.saturation_limit, config.stall_steps)
    checkpointing = dict(health=health, checkpoint_every=config.checkpoint_every,
                         on_checkpoint=lambda state: save_checkpoint(run_dir, _fingerprinted(state, record["run_id"],
                                                                                              config_sha)),
                         resume=checkpoint)
    try:
        with _threads(backend, config.threads):
            history, stored, memory, counters, energy, warnings, stopped = _train(
                config, backend, device, dims, rcfg, data, weights, on_batch, checkpointing, planned)
    except KeyboardInterrupt:
        record.update(status="interrupted", interrupted={"seconds": time.perf_counter() - started})
        write_json_atomic(run_dir / "run.json", record)
        last = "its last checkpoint" if (run_dir / "checkpoint.npz").exists() else "the start (no checkpoint yet)"
        raise RunInterrupted(f"interrupted; the run is recorded in {run_dir} as interrupted: continue it from "
                             f"{last} with fo-edge simulate --resume {run_dir}") from None
    seconds = time.perf_counter() - started
    accuracy = history[-1]["test_accuracy"] if history and stopped is None else None
    best = max(history, key=lambda h: h["test_accuracy"]) if history else None
    record.update(status="complete" if stopped is None else "stopped", history=history, memory=memory,
                  counters=counters, energy=energy, warnings=warnings,
                  final={"test_accuracy": accuracy, "seconds": seconds,
                         # the reference's restore_best: reported beside, never instead of, the last epoch
                         "best_test_accuracy": best["test_accuracy"] if best else None,
                         "best_epoch": best["epoch"] if best else None,
                         "samples_per_s": counters.get("training_samples", len(data.x_train) * config.epochs)
                         / max(seconds, 1e-9)})
    if stopped is not None:
        record["stop"] = {"kind": stopped.kind, "layer": stopped.layer, "step": stopped.step, "message": str(stopped)}
    save_weights(run_dir / "weights.npz", {k: np.asarray(v) for k, v in stored.items()})
    write_json_atomic(run_dir / "run.json", record)
    if stopped is not None:
        raise RunError(f"{stopped}; the partial run is recorded in {run_dir}")
    return SimulateResult(accuracy, history, run_dir, memory, record)


@contextlib.contextmanager
def _threads(backend: str, threads: int | None):
    """The numba backend's kernel threads (engine.threads; every core by default), or torch's intra-op threads
    set to ``threads`` for the block (None: torch's as they are). A torch run leaves Numba's threading layer
    unstarted, so torch's own OpenMP pool sets its float results as before."""
    if backend != "torch":
        with kernel_threads(threads):
            yield
        return
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(config: SimulateConfig, backend: str, device: DeviceProfile, dims, rcfg, data, weights,
           on_batch, checkpointing: dict, planned: dict):
    """Run the training loop of ``backend`` on ``device``; returns (history, stored arrays, memory, counters,
    energy, warnings, the health stop or None). ``planned``: the device's memory plan (the torch paths' record)."""
    lr, stopped = config.lr, None
    if backend == "torch" and device.spiking is not None:
        from .engine.spiking_torch import train_spiking_torch

        try:
            final, history = train_spiking_torch(weights, data, config.rule, rcfg, device, error=config.error,
                                                 lr=lr, epochs=config.epochs, batch_size=config.batch_size,
                                                 seed=config.seed, device=config.torch_device, on_batch=on_batch,
                                                 plan=config.plan(), hidden_error=config.hidden_error,
                                                 **checkpointing)
        except TrainingStopped as stop:
            (final, history), stopped = stop.outcome, stop.error
        stored = {f"W{l}": w for l, w in enumerate(final)}
        memory, counters, energy, warnings = planned, {}, None, []
    elif backend == "torch":
        from .accounting.float_counts import FloatMeter
        from .engine.torch_loop import train_torch

        meter = FloatMeter(dims, device, config.rule, config.schedule)
        try:
            final, history = train_torch(weights, data, config.rule, rcfg, activation=config.activation,
                                         error=config.error, lr=lr, epochs=config.epochs,
                                         batch_size=config.batch_size, seed=config.seed,
                                         device=config.torch_device, on_batch=on_batch, plan=config.plan(),
                                         momentum=config.momentum, weight_decay=config.weight_decay,
                                         dropout=config.dropout, meter=meter, **checkpointing)
        except TrainingStopped as stop:
            (final, history), stopped = stop.outcome, stop.error
        stored = {f"W{l}": w for l, w in enumerate(final)}
        memory = planned
        counters = meter.record()
        energy = energy_record(counters_array(counters), device.energy_pj,
                               training_samples=counters["training_samples"],
                               inference_samples=counters["inference_samples"], layers=counters["layers"])
        warnings: list[str] = []
    else:
        from .engine.stream import train_stream

        try:
            outcome = train_stream(weights, data, config.rule, rcfg, device, activation=config.activation,
                                   error=config.error, lr=lr, epochs=config.epochs, batch_size=config.batch_size,
                                   seed=config.seed, schedule=config.schedule, on_batch=on_batch,
                                   plan=config.plan(), hidden_error=config.hidden_error, dropout=config.dropout,
                                   momentum=config.momentum, weight_decay=config.weight_decay, **checkpointing)
        except TrainingStopped as stop:
            outcome, stopped = stop.outcome, stop.error
        history, stored, memory, counters = outcome.history, outcome.stored, outcome.memory, outcome.counters
        warnings = outcome.warnings
        energy = energy_record(counters_array(counters), device.energy_pj,
                               training_samples=counters["training_samples"],
                               inference_samples=counters["inference_samples"], layers=counters["layers"])
        if device.spiking is not None:
            energy = _with_static(energy, counters, device, dims)
    return history, stored, memory, counters, energy, warnings, stopped


def _with_static(energy: dict, counters: dict, device: DeviceProfile, dims) -> dict:
    """Add the spiking time model's static energy (accounting.spiking_time) to an energy record."""
    from .accounting.spiking_time import static_record
    from .rules.spiking_binding import layer_cores

    energy["static"] = static_record(counters_array(counters), layer_cores(dims, device), device.spiking,
                                     device.energy_pj.get("static_mw", 0.0),
                                     training_samples=counters["training_samples"],
                                     inference_samples=counters["inference_samples"])
    energy["not_charged"] = [n for n in energy["not_charged"] if not n.startswith("static_mw")]
    return energy


def _simulate_conv(config: SimulateConfig, on_batch, on_start, resuming: bool = False, checkpoint: dict | None = None,
                   run_id: str | None = None) -> SimulateResult:
    """A conv model (``c16-c32-10``): FOTON or BP on an orthogonal BCOP conv net (see :mod:`fo_edge.conv_run`),
    through the same run lifecycle as MLPs: checkpoints every ``checkpoint_every`` steps, --resume (``checkpoint``:
    the last one, None to start over in the run's directory), health stops, interruption."""
    from .accounting.conv_float_counts import ConvFloatMeter
    from .conv_run import conv_record, conv_train_config, finish_record, train_conv_run

    device = load_device(config.device)
    if device.spiking is not None:
        raise ConfigError(f"{device.id} is spiking; conv models run on gpu-fp32, mcu-int8 or fpga-fixed16 "
                          "(pass --device)")
    backend = config.backend or ("torch" if device.is_float else "numba")
    if backend == "torch" and not device.is_float:
        raise ConfigError(f"--backend torch runs float devices only; {device.id} is {device.arithmetic.value}: "
                          f"use --backend numba")
    if config.data_dir is None and config.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)} or --data-dir")
    _validate_pipeline(config)
    limits.check("threads", config.threads)
    _validate_threads(config.threads)
    optimiser = [name for name in ("momentum", "weight_decay", "dropout") if getattr(config, name)]
    if optimiser:
        raise ConfigError(f"{optimiser[0].replace('_', ' ')} is not implemented for conv models (plain SGD)")
    if config.init != "orthogonal":
        raise ConfigError("conv models are BCOP-parametrised and always start orthogonal: --init does not apply")
    train_config = conv_train_config(rule=config.rule, activation=config.activation, error=config.error,
                                     lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                                     seed=config.seed, backend=backend, rule_options=dict(config.rule_options),
                                     plan=config.plan())
    _check_run_options(config)
    data = _prepared_data(config)
    simulate = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "overwrite")}
    record = conv_record(config.model, train_config, data, device, simulate)  # refuses a bad spec first
    # the device's memory for this net, batch and rule: a run that cannot fit is refused before anything is written
    from .rules.conv_memory import plan_conv_memory

    spec = parse_conv_spec(config.model, data.image_shape)
    record["memory"] = plan_conv_memory(spec, device, train_config.rule, train_config.batch_size,
                                        ortho=train_config.ortho_every > 0).report()
    run_dir = prepare_run_dir(config.out or default_run_dir(config),
                              "resume" if resuming else "replace" if config.overwrite else "refuse")
    record["run_id"] = run_id or uuid.uuid4().hex
    device_toml = device_text(config.device)[0].encode()
    write_file_atomic(run_dir / "device.toml", lambda handle: handle.write(device_toml))
    if checkpoint is None:
        write_json_atomic(run_dir / "run.json", record)
    config_sha = _digest(read_run(run_dir)["config"])
    if on_start is not None:
        on_start(len(data.x_train) * config.epochs)
    started, stopped = time.perf_counter(), None
    try:
        with _threads(backend, config.threads):
            meter = ConvFloatMeter(spec, device, train_config.rule) if backend == "torch" else None
            run = train_conv_run(record, train_config, data, device, on_batch=on_batch, meter=meter,
                                 health=HealthConfig(config.on_unhealthy, config.saturation_limit, config.stall_steps),
                                 checkpoint_every=config.checkpoint_every, resume=checkpoint,
                                 on_checkpoint=lambda state: save_checkpoint(
                                     run_dir, _fingerprinted(state, record["run_id"], config_sha)))
    except TrainingStopped as stop:
        run, stopped = stop.outcome, stop.error
    except KeyboardInterrupt:
        record.update(status="interrupted", interrupted={"seconds": time.perf_counter() - started})
        write_json_atomic(run_dir / "run.json", record)
        raise RunInterrupted(f"interrupted; the run is recorded in {run_dir} as interrupted: continue it with "
                             f"fo-edge simulate --resume {run_dir}") from None
    stored = finish_record(record, run, time.perf_counter() - started, device, stopped)
    save_weights(run_dir / "weights.npz", stored)
    write_json_atomic(run_dir / "run.json", record)
    if stopped is not None:
        raise RunError(f"{stopped}; the partial run is recorded in {run_dir}")
    return SimulateResult(record["final"]["test_accuracy"], record["history"], run_dir, record["memory"], record)


def energy_report(run_dirs, *, by_layer: bool = False, mode: str | None = None, plot: str | None = None) -> list[dict]:
    """Rows comparing runs (or, with ``by_layer``, one row per run and layer); writes ``plot`` (PNG) if given.
    ``mode``: None (each run's primary energy mode), ``op`` or ``system``."""
    from . import report

    if mode not in (None, "op", "system"):
        raise ConfigError(f"unknown energy mode {mode!r}; choose op or system")
    if plot is not None:
        if not str(plot).lower().endswith(".png"):
            raise ConfigError(f"--plot {plot}: give a .png file name")
        limits.check_output_file(plot, "--plot")
    runs = report.load_runs(run_dirs)
    rows = report.comparison_rows(runs, mode)
    if plot is not None:
        report.plot_runs(rows, plot)
    return report.layer_rows(runs, mode) if by_layer else rows


def export_model(run_dir, out, *, int8: bool = False) -> dict:
    """ONNX export of a run, verified in onnxruntime (see :mod:`fo_edge.export`); returns the report."""
    from .export import export_onnx

    limits.check_output_file(out, "--out")
    return export_onnx(run_dir, out, int8=int8)


def export_nir_model(run_dir, out) -> dict:
    """NIR export of a spiking run, verified through snnTorch's importer (see :mod:`fo_edge.export_nir`)."""
    from .export_nir import export_nir

    limits.check_output_file(out, "--nir")
    return export_nir(run_dir, out)


DEMO_MODEL = "784-128-128-10"


@dataclass
class DemoResult:
    """The demo's training run and its two verified exports."""

    run: SimulateResult
    exports: list[dict]


def demo(out: str | None = None, *, steps: int = 300, batch_size: int = 32,
         on_batch: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None) -> DemoResult:
    """FTP from scratch on mcu-int8 for ``steps`` steps of MNIST, then int8 and fp32 ONNX exports, each verified
    in onnxruntime. The test set is capped at ``steps * batch_size`` samples (as ``--limit`` does)."""
    limits.check("steps", steps)
    limits.check("batch_size", batch_size)
    run_dir = Path(out) if out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run = simulate(rule="ftp", device="mcu-int8", model=DEMO_MODEL, batch_size=batch_size, epochs=1,
                   limit=steps * batch_size, out=str(run_dir), on_batch=on_batch, on_start=on_start)
    exports = [export_model(run.run_dir, run.run_dir / "model-int8.onnx", int8=True),
               export_model(run.run_dir, run.run_dir / "model-fp32.onnx")]
    return DemoResult(run, exports)


def diagnose(run_dir=None, *, plot: str | None = None, **fresh) -> dict:
    """Per-layer cosine with BP and orthogonality drift (see :mod:`fo_edge.diagnose`): of a saved run when
    ``run_dir`` is given, else of a fresh short run (``fresh``: rule, model, dataset, steps, every, ...)."""
    from . import diagnose as diagnostics

    if plot is not None and not str(plot).lower().endswith(".png"):
        raise ConfigError(f"--plot {plot}: give a .png file name")
    limits.check_output_file(plot, "--plot")
    for name in ("steps", "every", "batch_size", "lr", "seed"):
        limits.check(name, fresh.get(name))
    result = diagnostics.diagnose_run(run_dir) if run_dir is not None else diagnostics.diagnose_fresh(**fresh)
    if plot is not None:
        diagnostics.plot_diagnostics(result, plot)
    return result
