"""What a run is asked to do: :class:`SimulateConfig`, and the checks every model family shares.

The options of ``fo-edge simulate`` as one frozen dataclass, the default run directory, the range checks of the
options every family takes (steps, seed, data cap, lr and its decay, checkpoints, health thresholds, threads,
data pipeline) and the dataset a run reads. Family-specific checks live with each family (fo_edge.families).
"""
from __future__ import annotations

import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits
from .data import load_dataset
from .engine.plan import BatchPlan
from .errors import ConfigError
from .models.mlp import INITS

__all__ = ["SimulateConfig", "DEFAULT_MODEL", "NORMALIZATIONS", "default_run_dir", "check_run_options",
           "check_threads", "check_pipeline", "prepared_data", "config_from_saved"]

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


def check_run_options(config: SimulateConfig) -> None:
    """The options every model family shares, each in its range: schedule of steps, seed, data cap, lr and its
    decay, checkpoints and the health thresholds."""
    for name in ("epochs", "batch_size", "seed", "limit", "checkpoint_every", "stall_steps", "saturation_limit",
                 "lr", "lr_gamma"):
        limits.check(name, getattr(config, name))
    if config.on_unhealthy not in ("stop", "warn"):
        raise ConfigError(f"--on-unhealthy must be stop or warn, got {config.on_unhealthy!r}")


def check_threads(threads: int | None) -> None:
    """--threads in its range (limits) and no more than the cores this process may use (Numba's thread pool)."""
    from .engine.threads import available_threads

    limits.check("threads", threads)
    if threads is not None and threads > available_threads():
        raise ConfigError(f"--threads {threads}: this machine gives the process {available_threads()} core(s); "
                          f"use at most that many")


def check_pipeline(config: SimulateConfig) -> None:
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


def prepared_data(config: SimulateConfig):
    """The dataset of a run, standardised when ``config.normalize == "standard"`` (statistics of the whole
    training split, before ``limit``), then limited."""
    data = load_dataset(config.dataset if config.data_dir is None else None, config.data_dir)
    if config.normalize == "standard":
        data = data.standardized()
    return data.limited(config.limit)


def config_from_saved(saved: dict) -> SimulateConfig:
    """A SimulateConfig from the options a run recorded as given (run.json's ``config.simulate``); names this
    version does not know are left out."""
    names = {f.name for f in dataclasses.fields(SimulateConfig)}
    return SimulateConfig(**{k: v for k, v in saved.items() if k in names})
