"""The MANO family: multipole attention nets (``--model mano`` or
``mano:dim=32,depth=2,heads=2,window=4,patch=2,stride=0,variant=vcycle``; models.mano).

On an image dataset (mnist, fashion-mnist, digits) a MANOClassifier (p x p patches embedded, MANO blocks on the
patch grid, mean-pooled readout) learns the labels with cross-entropy; on a Darcy set (``darcy32``, ``darcy64``:
fo_edge.darcy, generated and cached) a MANOOperator maps the coefficient a, scaled to (a - 7.5) / 4.5 in
{-1, 1}, to the solution u over the training split's standard deviation, with MSE, and the run reports the
relative L2 error of u on the test split (the paper's metric) instead of an accuracy. Both rules (BP, and FTP's
block-local losses: engine.mano_loop) train on one of two backends, the lr stepped down at --lr-milestones by
--lr-gamma:
  torch (float devices; the default there): Adam on the float torch path (CPU).
  numba (integer devices such as mcu-int8; the default there, or --backend numba on gpu-fp32): every linear map's
    forward, backward product and update on the device's kernels with an exponent per tensor, the rest on the
    host in float, SGD (rules.mano_device_training; FTP with block_loss readout); memory planned in the
    device's formats (rules.mano_memory).

The lifecycle (fo_edge.lifecycle) gives MANO runs what every run has: device memory planned before anything is
written (rules.mano_memory; refused if it cannot fit), counters and energy (accounting.mano_counts), health stops,
checkpoints and --resume to the same weights. weights.npz: every parameter under its state_dict name, float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..accounting.counters import counters_record
from ..accounting.energy import energy_of
from ..accounting.mano_counts import MANOMeter
from ..darcy import DARCY_DATASETS
from ..device import DeviceProfile, load_device
from ..engine.health import TrainingStopped
from ..engine.mano_loop import MANO_RULES, MANOTrainConfig, train_mano, train_options
from ..errors import ConfigError
from ..kernels.counters import INFERENCE
from ..lifecycle import Training, skeleton
from ..mano_run import MANOTask, build_mano, mano_task, task_score
from ..models.mano import parse_mano_spec
from ..rules.mano_device_training import DeviceTraining
from ..run_config import SimulateConfig, check_pipeline, check_run_options, check_threads

__all__ = ["MANOPrepared", "prepare", "MANO_DEFAULT_LR", "MANO_DEVICE_LR", "EVAL_CHUNK"]

#: Adam's step size when --lr is not given
MANO_DEFAULT_LR = 1e-3
#: SGD's step size on the numba backend (rules.mano_device_training) when --lr is not given, per task: a field's
#: loss sums over every grid point (0.5 |y - u|^2 / B), and SGD diverged on darcy32 at 1e-3 (tools/bench_mano.py)
MANO_DEVICE_LR = {"classify": 0.3, "field": 1e-4}
#: test samples per evaluation forward
EVAL_CHUNK = 500
#: SimulateConfig fields a MANO run does not use, with the value that means "not given"
_UNUSED = {"activation": None, "schedule": "stream", "drop_last": False, "batch_divisor": "actual",
           "momentum": 0.0, "weight_decay": 0.0, "dropout": 0.0, "init": "orthogonal",
           "hidden_error": None, "error": "ce"}


@dataclass
class MANOPrepared:
    """A prepared MANO run (lifecycle.PreparedRun)."""

    config: SimulateConfig
    backend: str
    record: dict
    total_samples: int
    device: DeviceProfile
    task: MANOTask
    model: torch.nn.Module
    train_config: MANOTrainConfig

    def _evaluate(self, meter: MANOMeter):
        def evaluate(model: torch.nn.Module) -> float:
            outputs = []
            with torch.no_grad():
                for begin in range(0, len(self.task.x_test), EVAL_CHUNK):
                    x = torch.as_tensor(self.task.x_test[begin:begin + EVAL_CHUNK])
                    with meter.phase(INFERENCE, len(x)):
                        outputs.append(model(x).numpy())
                    meter.inferred += len(x)
            return task_score(self.task, np.concatenate(outputs))
        return evaluate

    def _device(self, meter: MANOMeter):
        """The numba backend's DeviceTraining (its maps counted into the meter's stage columns), or a null context
        on torch."""
        if self.backend != "numba":
            return contextlib.nullcontext()
        return DeviceTraining(self.model, self.device, self.train_config.lr, seed=self.train_config.seed,
                              counters=meter.counters, columns=meter.map_columns(self.model))

    def train(self, training: Training):
        meter = MANOMeter(self.model, device_maps=self.backend == "numba")
        metric = "test_relative_l2" if self.task.field else "test_accuracy"
        try:
            with self._device(meter) as device:
                history = train_mano(self.model, self.task.x_train, self.task.y_train, self.train_config,
                                     self._evaluate(meter), self.task.outputs, meter=meter, metric=metric,
                                     device=device, **training.keywords())
        except TrainingStopped as stop:  # a health stop: the history so far, with the meter
            stop.outcome = (stop.outcome, meter)
            raise
        finally:
            meter.close()
        return history, meter

    def finish(self, record: dict, outcome, seconds: float, stopped) -> dict[str, np.ndarray]:
        history, meter = outcome
        counters = counters_record(meter.counters, training_samples=meter.trained, inference_samples=meter.inferred)
        energy = energy_of(counters, self.device.energy_pj)
        last = history[-1] if history and stopped is None else {}
        final = {"seconds": seconds, "samples_per_s": meter.trained / max(seconds, 1e-9)}
        if self.task.field:
            final["relative_l2"] = last.get("test_relative_l2")
            final["test_accuracy"] = None
        else:
            final["test_accuracy"] = last.get("test_accuracy")
            best = max(history, key=lambda h: h["test_accuracy"]) if history else None
            final.update(best_test_accuracy=best["test_accuracy"] if best else None,
                         best_epoch=best["epoch"] if best else None)
        record.update(status="complete", history=history, counters=counters, energy=energy, final=final)
        return {name: p.detach().numpy().astype(np.float32) for name, p in self.model.state_dict().items()}


def _check_options(config: SimulateConfig, device: DeviceProfile) -> str:
    """The options a MANO run refuses; returns the backend: torch (float, Adam) or numba (the linear maps on the
    device's kernels, SGD: rules.mano_device_training), by default torch on a float device and numba on an
    integer one."""
    if config.rule not in MANO_RULES:
        raise ConfigError(f"MANO models train with {' or '.join(MANO_RULES)}, not {config.rule!r}")
    if device.spiking is not None or device.analog is not None:
        raise ConfigError(f"MANO runs on digital non-spiking devices such as mcu-int8 or gpu-fp32, not {device.id}")
    backend = config.backend or ("torch" if device.is_float else "numba")
    if backend not in ("torch", "numba"):
        raise ConfigError(f"MANO runs on --backend torch or numba, not {backend}")
    if backend == "torch" and not device.is_float:
        raise ConfigError(f"MANO on {device.id} ({device.arithmetic.value}) trains its linear maps on the device's "
                          "kernels: use --backend numba (its default there); the float torch path needs a float "
                          "device such as gpu-fp32")
    if backend == "numba" and dict(config.rule_options).get("block_loss") == "target":
        raise ConfigError("-o block_loss=target runs on the float torch path only (--backend torch, a float device)")
    if config.torch_device != "cpu":
        raise ConfigError(f"MANO runs on the CPU; --torch-device {config.torch_device} is not supported for it")
    for name, unused in _UNUSED.items():
        value = getattr(config, name)
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != unused:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to MANO models (Adam or SGD, "
                              f"cross-entropy for classes and MSE for fields)")
    train_options(config.rule, dict(config.rule_options))  # refuses what MANO's rules do not take
    return backend


def prepare(config: SimulateConfig) -> MANOPrepared:
    """Stages 1 and 2 of a MANO run: every option checked, the data loaded, the model built and its training
    memory planned on the device (refused if it cannot fit); nothing is written."""
    try:
        sizes = parse_mano_spec(config.model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    device = load_device(config.device)
    backend = _check_options(config, device)
    check_run_options(config)
    check_threads(config.threads)
    check_pipeline(config)
    # the options as given, which --resume reads back
    simulate = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "overwrite")}
    field = config.dataset in DARCY_DATASETS
    lr = (MANO_DEFAULT_LR if backend == "torch" else MANO_DEVICE_LR["field" if field else "classify"]) \
        if config.lr is None else float(config.lr)
    config = dataclasses.replace(config, lr=lr, backend=backend)
    train_config = MANOTrainConfig(rule=config.rule, task="field" if field else "classify",
                                   lr=lr, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                                   plan=config.plan(), **train_options(config.rule, dict(config.rule_options)))
    train_config.validate()
    task = mano_task(config)
    model = build_mano(config, task, sizes)
    from ..rules.mano_memory import plan_mano_device_memory, plan_mano_memory

    sample = task.x_train.shape[1:]
    if backend == "numba":
        memory = plan_mano_device_memory(model, sample, device, config.rule, config.batch_size,
                                         readouts=train_config.readouts).report()
    else:
        memory = plan_mano_memory(model, sample, device, config.rule, config.batch_size, task.outputs,
                                  task.field, readouts=train_config.readouts).report()
    record = skeleton({"rule": config.rule, "device": device.id, "model": config.model, "dataset": task.name,
                       "backend": backend, "lr": lr, "epochs": config.epochs, "batch_size": config.batch_size,
                       "seed": config.seed, "limit": config.limit, "data_dir": config.data_dir, "activation": None,
                       "dims": [int(np.prod(sample)), int(np.prod(sample)) if task.field else task.outputs],
                       "mano": sizes, "task": train_config.task,
                       "block_loss": train_config.block_loss if config.rule == "ftp" else None,
                       "stages": ["stem", *(f"block{i + 1}" for i in range(sizes["depth"])), "head"],
                       "parameters": int(sum(p.numel() for p in model.parameters())),
                       "rule_options": dict(config.rule_options), "simulate": simulate},
                      device, task.name, len(task.x_train), len(task.x_test), config.seed)
    record["memory"] = memory
    return MANOPrepared(config, backend, record, len(task.x_train) * config.epochs, device, task, model,
                        train_config)
