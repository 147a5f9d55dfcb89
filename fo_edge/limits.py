"""The ranges of every numeric option, in one table every command checks against before anything is written.

``check(name, value)`` refuses a value outside ``LIMITS[name]`` (wrong type, NaN/inf, below or above the bounds)
with one :class:`ConfigError` line naming the option as typed on the command line; ``check_torch_device`` and
``check_output_file`` refuse a torch device this machine lacks and an output file whose folder does not exist.
The bounds are what a run can use, not what a run should use: the upper bounds keep one typo (``--lr 1e30``,
``--steps 1e12``) from overflowing a fixed-point scale or running for a year, and are far above any setting
fo-edge's recipes or benchmarks use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["Bound", "LIMITS", "MAX_SWEEP_POINTS", "check", "check_torch_device", "check_output_file"]


@dataclass(frozen=True)
class Bound:
    """``kind`` (int or float), inclusive ``lo``/``hi`` (``lo_open``: ``lo`` itself refused), and what it is."""

    kind: type
    lo: float
    hi: float
    what: str
    lo_open: bool = False

    def describe(self) -> str:
        left = "(" if self.lo_open else "["
        noun = "an integer" if self.kind is int else "a number"
        return f"{noun} in {left}{_num(self.lo)}, {_num(self.hi)}] ({self.what})"


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


#: option (SimulateConfig / command parameter name) -> its range
LIMITS: dict[str, Bound] = {
    "epochs": Bound(int, 1, 100_000, "passes over the training set"),
    "batch_size": Bound(int, 1, 1 << 20, "samples per step"),
    "seed": Bound(int, 0, 2**32 - 1, "numpy's seed range"),
    "limit": Bound(int, 1, 10**9, "samples"),
    "checkpoint_every": Bound(int, 0, 10**9, "steps; 0: no checkpoints"),
    "stall_steps": Bound(int, 1, 10**9, "steps"),
    "saturation_limit": Bound(float, 0.0, 1.0, "a fraction", lo_open=True),
    "lr": Bound(float, 0.0, 1e3, "a learning rate; larger ones overflow the integer devices' update scale",
                lo_open=True),
    "lr_gamma": Bound(float, 0.0, 1e3, "the lr factor at each milestone", lo_open=True),
    "momentum": Bound(float, 0.0, 0.999, "SGD momentum"),
    "weight_decay": Bound(float, 0.0, 1.0, "L2 weight decay"),
    "dropout": Bound(float, 0.0, 0.95, "a drop probability"),
    "steps": Bound(int, 1, 10**7, "training steps"),
    "every": Bound(int, 1, 10**7, "steps between samples"),
    "workers": Bound(int, 1, 1024, "parallel points"),
    "threads": Bound(int, 1, 1024, "threads of the kernels (and of torch on the torch path)"),
}

#: the most points one sweep may expand to (a range with a tiny step must not allocate a billion points)
MAX_SWEEP_POINTS = 100_000


def check(name: str, value, flag: str | None = None) -> None:
    """Refuse ``value`` unless it lies in ``LIMITS[name]`` (None passes: the option was not given)."""
    if value is None:
        return
    bound = LIMITS[name]
    flag = flag or "--" + name.replace("_", "-")
    ok_type = isinstance(value, int) if bound.kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{flag} must be {bound.describe()}, got {value!r}")
    too_low = value <= bound.lo if bound.lo_open else value < bound.lo
    if too_low or value > bound.hi:
        raise ConfigError(f"{flag} must be {bound.describe()}, got {value!r}")


def check_torch_device(name: str) -> None:
    """Refuse a torch device string torch does not know, or ``cuda`` on a machine without CUDA."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--torch-device {name!r} is not a torch device (cpu, cuda, cuda:N): "
                          f"{str(exc).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--torch-device {name}: this machine has no CUDA device (torch {torch.__version__}); "
                          f"use --torch-device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--torch-device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--torch-device {name}: fo-edge runs on cpu or cuda")


def check_output_file(path: str | Path | None, flag: str) -> None:
    """Refuse an output file whose folder does not exist (or is not a folder), or that names a folder."""
    if path is None:
        return
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
