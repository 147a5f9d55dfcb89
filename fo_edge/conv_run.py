"""A recorded conv-net run: what ``fo-edge simulate --model c16-c32-10`` does (api.simulate routes here).

Trains an orthogonal BCOP conv net (models.conv) with FOTON or BP through engine.conv_loop, on the PyTorch
path or (FOTON) the Numba device path, and writes the run directory as MLP runs do: ``device.toml``,
``run.json`` (schema 2; ``config.conv`` holds the spec, ``config.dims`` the activity sizes per layer, counters
and energy on the Numba path) and ``weights.npz`` (``K{l}`` kernels (C_out, C_in, k, k) and the dense
``W{L-1}``, float32: the host's master weights, which the device holds rounded to its formats). Not yet for
conv runs: device-memory accounting, checkpoints and --resume, ONNX export and diagnose.
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

import numpy as np

from .accounting.counters import counters_array, counters_record
from .accounting.energy import energy_record
from .data import Dataset
from .device import DeviceProfile
from .engine.conv_loop import CONV_RULES, ConvTrainConfig, train_conv
from .engine.plan import BatchPlan
from .errors import ConfigError
from .models.conv import parse_conv_spec
from .runs import SCHEMA_VERSION, package_versions, save_weights, write_file_atomic, write_json_atomic

__all__ = ["CONV_OPTIONS", "conv_train_config", "run_conv"]

#: rule options a conv run accepts (-o KEY=VALUE), mapped onto ConvTrainConfig
CONV_OPTIONS = ("temperature", "ortho_every", "bjorck_iters", "refresh_every")
MEMORY_NOTE = "not accounted for conv nets yet"


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


def run_conv(model: str, config: ConvTrainConfig, data: Dataset, device: DeviceProfile, device_toml: bytes,
             run_dir: Path, on_batch: Callable[[int], None] | None = None) -> dict:
    """Train and record one conv run in ``run_dir`` (already prepared); returns the final run.json record."""
    spec = parse_conv_spec(model, data.image_shape)
    if spec.n_classes < data.n_classes:
        raise ConfigError(f"--model {model} has {spec.n_classes} outputs; {data.name} needs {data.n_classes}")
    shapes = spec.layer_shapes()
    dims = [int(np.prod(shapes[0]))] + [c * s[1] * s[2] for c, s in zip(spec.channels, shapes)] + [spec.n_classes]
    record = {
        "schema_version": SCHEMA_VERSION, "status": "running",
        "config": {**asdict(config), "model": model, "device": device.id, "dataset": data.name, "dims": dims,
                   "conv": {"channels": list(spec.channels), "kernel": spec.kernel, "in_shape": list(spec.in_shape)},
                   "rule_options": {k: getattr(config, k) for k in CONV_OPTIONS}},
        "device": {"id": device.id, "name": device.name, "path": device.path, "arithmetic": device.arithmetic.value,
                   "energy_pj": dict(device.energy_pj),
                   "capacity": {"sram_bytes": device.capacity.sram_bytes, "flash_bytes": device.capacity.flash_bytes}},
        "dataset": {"name": data.name, "n_train": int(len(data.x_train)), "n_test": int(len(data.x_test))},
        "history": [], "final": {}, "memory": {}, "memory_note": MEMORY_NOTE, "counters": {}, "energy": None,
        "warnings": [], "seed": config.seed, "versions": package_versions(),
    }
    write_file_atomic(run_dir / "device.toml", lambda handle: handle.write(device_toml))
    write_json_atomic(run_dir / "run.json", record)
    started = time.perf_counter()
    run = train_conv(spec, data, config, device if config.backend == "numba" else None, on_batch=on_batch)
    seconds = time.perf_counter() - started
    trained = len(data.x_train) * config.epochs
    if run.counters is not None:
        inferred = len(data.x_test) * config.epochs
        counters = counters_record(run.counters, training_samples=trained, inference_samples=inferred)
        record["counters"] = counters
        record["energy"] = energy_record(counters_array(counters), device.energy_pj, training_samples=trained,
                                         inference_samples=inferred, layers=counters["layers"])
    record.update(status="complete", history=run.history,
                  final={"test_accuracy": run.history[-1]["test_accuracy"], "seconds": seconds,
                         "samples_per_s": trained / max(seconds, 1e-9)})
    kernels = run.kernels(spec)
    stored = {f"K{l}": k.float().numpy() for l, k in enumerate(kernels[:-1])}
    stored[f"W{len(kernels) - 1}"] = kernels[-1].float().numpy()
    save_weights(run_dir / "weights.npz", stored)
    write_json_atomic(run_dir / "run.json", record)
    return record
