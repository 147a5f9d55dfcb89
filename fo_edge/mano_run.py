"""A MANO run's data and model, rebuilt from its options: the family that trains it (families.mano) and the
ONNX export that verifies it (export) build them here, so both see the same inputs and the same network.

Image datasets (mnist, fashion-mnist, digits): the run's prepared data (``--normalize``, ``--limit``), inputs
(N, C*S*S) float32, and a MANOClassifier. Darcy sets (``darcy32``, ``darcy64``: fo_edge.darcy, generated and
cached): the coefficient a scaled to (a - 7.5) / 4.5 in {-1, 1}, inputs (N, n, n) float32, the solution u over
the training split's standard deviation ``scale`` as the target, and a MANOOperator mapping one to the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .darcy import DARCY_DATASETS, DARCY_SPLIT, darcy_dataset, relative_l2
from .data import DATASETS
from .engine.mano_loop import MANO_RULES, MANOTrainConfig, train_options
from .errors import ConfigError
from .models.mano import MANOClassifier, MANOOperator
from .run_config import SimulateConfig, config_from_saved, prepared_data
from .runs import load_state_weights

__all__ = ["MANOTask", "mano_task", "build_mano", "trains_readouts", "task_score", "trained_mano"]


@dataclass
class MANOTask:
    """The data of a run in the model's terms: inputs (N, ...) float32, targets (labels, or fields over
    ``scale``); the test targets as measured (labels, or u itself)."""

    name: str
    field: bool
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    outputs: int
    scale: float = 1.0
    image_shape: tuple[int, ...] = ()


def mano_task(config: SimulateConfig) -> MANOTask:
    """The run's data (see the module docstring); an unknown dataset or an option it does not take is a
    ConfigError."""
    if config.data_dir is None and config.dataset in DARCY_DATASETS:
        if config.normalize != "none":
            raise ConfigError(f"{config.dataset}: the coefficients are scaled to {{-1, 1}} and the solutions by their "
                              f"standard deviation already; --normalize does not apply")
        darcy = darcy_dataset(DARCY_DATASETS[config.dataset], *DARCY_SPLIT, seed=0)
        n = config.limit
        a_train, u_train = darcy.a_train[:n], darcy.u_train[:n]
        scale = float(u_train.std()) or 1.0
        return MANOTask(config.dataset, True, ((a_train - 7.5) / 4.5).astype(np.float32),
                        (u_train / scale).astype(np.float32), ((darcy.a_test[:n] - 7.5) / 4.5).astype(np.float32),
                        darcy.u_test[:n], 1, scale)
    if config.data_dir is None and config.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose one of "
                          f"{', '.join((*DATASETS, *DARCY_DATASETS))} or --data-dir")
    data = prepared_data(config)
    return MANOTask(data.name, False, data.x_train, data.y_train, data.x_test, data.y_test, data.n_classes,
                    image_shape=tuple(data.image_shape))


def _image_shape(config: SimulateConfig, task: MANOTask) -> tuple[int, int, int]:
    shape = task.image_shape
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"MANO classifies square images; {config.dataset} has samples of shape {shape}")
    return tuple(int(v) for v in shape)


def build_mano(config: SimulateConfig, task: MANOTask, sizes: dict) -> torch.nn.Module:
    """The run's network, initialised from ``config.seed`` (sizes: models.mano.parse_mano_spec's dict), with a
    readout per block when its rule trains them (:func:`trains_readouts`)."""
    torch.manual_seed(config.seed)
    common = dict(dim=sizes["dim"], depth=sizes["depth"], heads=sizes["heads"], window=sizes["window"],
                  variant=sizes["variant"], stride=sizes["stride"], readouts=trains_readouts(config))
    if task.field:
        return MANOOperator(size=task.x_train.shape[-1], **common)
    image = _image_shape(config, task)
    if sizes["patch"] > image[1]:
        raise ConfigError(f"--model {config.model}: patch {sizes['patch']} is larger than the {image[1]}x{image[2]} "
                          f"images")
    return MANOClassifier(image, task.outputs, patch=sizes["patch"], **common)


def trains_readouts(config: SimulateConfig) -> bool:
    """Whether the run's rule trains block readouts (engine.mano_loop: ftp with block_loss "readout")."""
    if config.rule not in MANO_RULES:
        return False
    return MANOTrainConfig(rule=config.rule, **train_options(config.rule, dict(config.rule_options))).readouts


def task_score(task: MANOTask, outputs: np.ndarray) -> float:
    """The run's test metric of the model's outputs on ``task.x_test``: the relative L2 error of u (outputs times
    ``scale``) on a field task, else the accuracy of the arg-max class."""
    if task.field:
        return relative_l2(outputs * task.scale, task.y_test)
    return float((outputs.argmax(1) == task.y_test).mean())


def trained_mano(run_dir, record: dict) -> tuple[torch.nn.Module, MANOTask, SimulateConfig]:
    """A saved MANO run (run.json's ``record``) read back: its network with the weights of ``weights.npz``
    (checked by name and shape: runs.load_state_weights), in eval mode, its data and its options."""
    config = config_from_saved(record["config"].get("simulate") or {})
    task = mano_task(config)
    model = build_mano(config, task, record["config"]["mano"])
    state = load_state_weights(run_dir, {name: tuple(p.shape) for name, p in model.state_dict().items()})
    model.load_state_dict({name: torch.as_tensor(a) for name, a in state.items()})
    return model.eval(), task, config
