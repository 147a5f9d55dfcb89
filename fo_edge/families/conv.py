"""The conv family: what ``fo-edge simulate --model c16-c32-10`` trains (fo_edge.lifecycle runs it).

Trains an orthogonal BCOP conv net (models.conv) with FOTON or BP through engine.conv_loop, on the PyTorch
path or (FOTON) the Numba device path, and writes the run directory as MLP runs do: ``device.toml``,
``run.json`` (schema 2; ``config.conv`` holds the spec, ``config.dims`` the activity sizes per layer, counters
and energy on both paths: the Numba kernels count themselves, accounting.conv_float_counts the torch path) and ``weights.npz`` (``K{l}`` kernels (C_out, C_in, k, k) and the dense
``W{L-1}``, float32: the host's master weights, which the device holds rounded to its formats). :func:`prepare`
validates a run and plans its device memory (rules.conv_memory); the lifecycle makes the run directory,
checkpoints, --resume and health stops; this module makes the record. export.py exports conv runs to ONNX,
diagnose.py diagnoses them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..accounting.counters import counters_record
from ..accounting.energy import energy_of
from ..data import DATASETS, Dataset
from ..device import DeviceProfile, load_device
from ..engine.conv_loop import CONV_RULES, ConvRun, ConvTrainConfig, train_conv
from ..engine.plan import BatchPlan
from ..errors import ConfigError
from ..lifecycle import Training, skeleton
from ..models.conv import parse_conv_spec
from ..run_config import SimulateConfig, check_pipeline, check_run_options, check_threads, prepared_data

__all__ = ["CONV_OPTIONS", "ConvPrepared", "prepare", "conv_train_config", "conv_record", "train_conv_run",
           "finish_record"]

#: rule options a conv run accepts (-o KEY=VALUE), mapped onto ConvTrainConfig
CONV_OPTIONS = ("temperature", "ortho_every", "bjorck_iters", "refresh_every")


def conv_train_config(*, rule: str, activation: str | None, error: str, lr: float | None, epochs: int,
                      batch_size: int, seed: int, backend: str, rule_options: dict,
                      plan: BatchPlan = BatchPlan()) -> ConvTrainConfig:
    """The ConvTrainConfig of a simulate call (lr None: the conv default 0.1), refusing options it lacks."""
    if rule not in CONV_RULES:
        raise ConfigError(f"conv models train with {' or '.join(CONV_RULES)}; {rule!r} is MLP-only for now")
    unknown = sorted(set(rule_options) - set(CONV_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for conv runs; valid: {', '.join(CONV_OPTIONS)}")
    defaults = {f.name: f.default for f in fields(ConvTrainConfig)}
    config = ConvTrainConfig(rule=rule, activation=activation or defaults["activation"], error=error,
                             lr=defaults["lr"] if lr is None else float(lr), epochs=epochs, batch_size=batch_size,
                             seed=seed, backend=backend, plan=plan, **rule_options)
    config.validate()
    return config


def conv_record(model: str, config: ConvTrainConfig, data: Dataset, device: DeviceProfile, simulate: dict) -> dict:
    """The run.json skeleton of a conv run (status "running"): ``config`` holds the ConvTrainConfig, the spec, the
    activity sizes per layer (``dims``) and ``simulate``, the simulate options it was started with (--resume
    reads them back)."""
    spec = parse_conv_spec(model, data.image_shape)
    if spec.n_classes < data.n_classes:
        raise ConfigError(f"--model {model} has {spec.n_classes} outputs; {data.name} needs {data.n_classes}")
    shapes = spec.layer_shapes()
    dims = [int(np.prod(shapes[0]))] + [c * s[1] * s[2] for c, s in zip(spec.channels, shapes)] + [spec.n_classes]
    return skeleton({**asdict(config), "model": model, "device": device.id, "dataset": data.name, "dims": dims,
                     "conv": {"channels": list(spec.channels), "kernel": spec.kernel, "in_shape": list(spec.in_shape)},
                     "rule_options": {k: getattr(config, k) for k in CONV_OPTIONS}, "simulate": simulate},
                    device, data.name, len(data.x_train), len(data.x_test), config.seed)


def train_conv_run(record: dict, config: ConvTrainConfig, data: Dataset, device: DeviceProfile,
                   **training) -> ConvRun:
    """Train the run ``record`` describes (``training``: train_conv's keywords: on_batch, health, checkpoint_every,
    on_checkpoint, resume)."""
    spec = parse_conv_spec(record["config"]["model"], data.image_shape)
    return train_conv(spec, data, config, device if config.backend == "numba" else None, **training)


def finish_record(record: dict, run: ConvRun, seconds: float, device: DeviceProfile, stopped=None) -> dict:
    """Fill ``record`` with the run's history, counters and energy (Numba path) and final metrics; returns the
    arrays for weights.npz: ``K{l}`` kernels (C_out, C_in, k, k) and the dense ``W{L-1}``, float32 (the host's
    master weights), and on an integer device's Numba path its store: ``D{l}`` the mantissas (rows, C_in k k or
    the dense width) int32 and ``dexp{l}`` (rows,) int32 exponents, real = D x 2**dexp per row (the int8 ONNX
    export runs them)."""
    if run.counters is not None:
        counters = counters_record(run.counters, training_samples=run.trained, inference_samples=run.inferred)
        record["counters"] = counters
        record["energy"] = energy_of(counters, device.energy_pj)
    last = run.history[-1]["test_accuracy"] if run.history and stopped is None else None
    record.update(status="complete" if stopped is None else "stopped", history=run.history,
                  final={"test_accuracy": last, "seconds": seconds,
                         "samples_per_s": run.trained / max(seconds, 1e-9)})
    spec = parse_conv_spec(record["config"]["model"], tuple(record["config"]["conv"]["in_shape"]),
                           record["config"]["conv"]["kernel"])
    kernels = run.kernels(spec)
    stored = {f"K{l}": k.float().numpy() for l, k in enumerate(kernels[:-1])}
    stored[f"W{len(kernels) - 1}"] = kernels[-1].float().numpy()
    net = run.net
    if net is not None and net.quantized:
        for l, shape in enumerate(net.shapes):
            stored[f"D{l}"] = net.w[net.offs[l]:net.offs[l + 1]].reshape(shape).astype(np.int32)
            stored[f"dexp{l}"] = (-(net.w_frac[l] + net.row_shift[l])).astype(np.int32)
    return stored


@dataclass
class ConvPrepared:
    """A prepared conv run (lifecycle.PreparedRun)."""

    config: SimulateConfig
    backend: str
    record: dict
    total_samples: int
    device: DeviceProfile
    train_config: ConvTrainConfig
    data: Dataset

    def train(self, training: Training) -> ConvRun:
        from ..accounting.conv_float_counts import ConvFloatMeter

        spec = parse_conv_spec(self.config.model, self.data.image_shape)
        meter = ConvFloatMeter(spec, self.device, self.train_config.rule) if self.backend == "torch" else None
        return train_conv_run(self.record, self.train_config, self.data, self.device, meter=meter,
                              **training.keywords())

    def finish(self, record: dict, outcome: ConvRun, seconds: float, stopped) -> dict[str, np.ndarray]:
        return finish_record(record, outcome, seconds, self.device, stopped)


def prepare(config: SimulateConfig) -> ConvPrepared:
    """Stages 1 and 2 of a conv run: FOTON or BP on an orthogonal BCOP conv net, every option checked and the
    device's memory for this net, batch and rule planned; a run that cannot fit is refused before anything is
    written. ``config.simulate`` in run.json keeps the options as given (--resume reads them back)."""
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
    check_pipeline(config)
    check_threads(config.threads)
    optimiser = [name for name in ("momentum", "weight_decay", "dropout") if getattr(config, name)]
    if optimiser:
        raise ConfigError(f"{optimiser[0].replace('_', ' ')} is not implemented for conv models (plain SGD)")
    if config.init != "orthogonal":
        raise ConfigError("conv models are BCOP-parametrised and always start orthogonal: --init does not apply")
    train_config = conv_train_config(rule=config.rule, activation=config.activation, error=config.error,
                                     lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                                     seed=config.seed, backend=backend, rule_options=dict(config.rule_options),
                                     plan=config.plan())
    check_run_options(config)
    data = prepared_data(config)
    simulate = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "overwrite")}
    record = conv_record(config.model, train_config, data, device, simulate)  # refuses a bad spec first
    from ..rules.conv_memory import plan_conv_memory

    spec = parse_conv_spec(config.model, data.image_shape)
    record["memory"] = plan_conv_memory(spec, device, train_config.rule, train_config.batch_size,
                                        ortho=train_config.ortho_every > 0).report()
    return ConvPrepared(config, backend, record, len(data.x_train) * config.epochs, device, train_config, data)
