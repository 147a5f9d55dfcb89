"""The Python API: :func:`simulate` trains a model under a device model and records the run.

``simulate(rule="ftp", device="mcu-int8", ...)`` (or ``simulate(SimulateConfig(...))``) validates every input
before work starts, trains on the chosen backend, writes ``RUN_DIR/run.json`` and ``weights.npz``
atomically, and returns a :class:`SimulateResult`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import limits
from .errors import ConfigError
from .families import default_model, prepare, saved_config
from .lifecycle import execute, owned_checkpoint
from .run_config import DEFAULT_MODEL, NORMALIZATIONS, SimulateConfig, default_run_dir
from .runs import read_run

__all__ = ["SimulateConfig", "SimulateResult", "simulate", "default_run_dir", "DEFAULT_MODEL", "NORMALIZATIONS",
           "energy_report", "export_model", "DemoResult", "demo", "DEMO_MODEL", "diagnose"]


@dataclass
class SimulateResult:
    """accuracy: final test accuracy in [0, 1] (None for a field task: MANO on Darcy reports final["relative_l2"]);
    history: per-epoch metrics; run_dir: where run.json lives;
    memory: peak device bytes by category (Numba path) and the capacity; record: the whole run.json."""

    accuracy: float | None
    history: list[dict]
    run_dir: Path
    memory: dict
    record: dict


def _resume_config(run_dir) -> tuple[SimulateConfig, dict | None, str | None]:
    """The config of an unfinished run, its last checkpoint (None if it was killed before the first, refused if
    it is not this run's: lifecycle.owned_checkpoint) and its run id."""
    record = read_run(run_dir)
    if record.get("status") == "complete":
        raise ConfigError(f"--resume {run_dir}: the run is already complete")
    config = saved_config(record, run_dir)
    checkpoint = owned_checkpoint(run_dir, record)
    return dataclasses.replace(config, out=str(run_dir)), checkpoint, record.get("run_id")


def simulate(config: SimulateConfig | None = None, *, on_batch: Callable[[int], None] | None = None,
             on_start: Callable[[int], None] | None = None, resume: str | Path | None = None,
             **overrides) -> SimulateResult:
    """Train ``config.model`` with ``config.rule`` on ``config.device``; see the module docstring.

    The model's family (fo_edge.families: MLP, spiking, conv, MANO) validates the run and plans its memory;
    fo_edge.lifecycle runs it. ``on_start(total_samples)`` and ``on_batch(n_samples)`` let a caller show
    progress. ``resume=RUN_DIR`` continues an interrupted run from its last checkpoint (same config;
    bit-identical weights on the numba path, and on the torch path for the same device and thread count).
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
        config = dataclasses.replace(config, model=default_model(config))
    prepared = prepare(config)
    run_dir, record = execute(prepared, resume=resume, run_id=run_id, checkpoint=checkpoint, on_batch=on_batch,
                              on_start=on_start)
    final = record["final"]
    return SimulateResult(final.get("test_accuracy"), record["history"], run_dir, record["memory"], record)


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
