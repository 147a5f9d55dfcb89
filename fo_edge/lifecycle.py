"""The run lifecycle: the stages every run goes through, whatever its model family and backend.

    1 validate      family.prepare checks every option (nothing is written yet)
    2 plan memory   family.prepare plans the device's memory; a run that cannot fit is refused, still unwritten
    3 run dir       :func:`execute` makes the directory (refuse / replace / resume), writes device.toml and the
                    run.json skeleton (status "running", a fresh run id), fingerprints the recorded config
    4 train         engine.loop.run_epochs driving the family's stepper under the backend's threads: steps,
                    engine.health checks, a checkpoint every N steps (arrays fingerprinted here: run id, config
                    and weights, which --resume checks), progress through on_batch; a health stop ends it
                    early, Ctrl-C records "interrupted"
    5 evaluate and  the family fills run.json (history, final metrics, counters, energy, memory) and returns its
      record        weights; weights.npz, then run.json, are written atomically

A family hands the lifecycle a :class:`PreparedRun`; the lifecycle knows no family. The families are in
fo_edge.families (mlp: MLPs and spiking nets, conv: BCOP conv nets, mano: multipole attention operators).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from .device import device_text
from .engine.health import HealthConfig, TrainingStopped
from .engine.threads import kernel_threads
from .errors import RunError, RunInterrupted
from .run_config import SimulateConfig, default_run_dir
from .runs import (SCHEMA_VERSION, load_checkpoint, package_versions, prepare_run_dir, read_run, save_checkpoint,
                   save_weights, write_file_atomic, write_json_atomic)

__all__ = ["Training", "PreparedRun", "execute", "owned_checkpoint", "digest", "threads_for", "skeleton"]


@dataclass(frozen=True)
class Training:
    """What the lifecycle hands a family's training loop: ``on_batch(n_samples)`` progress, the health thresholds,
    steps between checkpoints (0: none), ``on_checkpoint(arrays)`` to save one, and ``resume``, the last
    checkpoint's arrays (None: start from the beginning)."""

    on_batch: Callable[[int], None] | None
    health: HealthConfig
    checkpoint_every: int
    on_checkpoint: Callable[[dict], None]
    resume: dict | None

    def keywords(self) -> dict[str, Any]:
        """The keywords every engine's train function passes to engine.loop.run_epochs (engine.stream, torch_loop,
        spiking_torch, conv_loop, mano_loop)."""
        return dict(on_batch=self.on_batch, health=self.health, checkpoint_every=self.checkpoint_every,
                    on_checkpoint=self.on_checkpoint, resume=self.resume)


class PreparedRun(Protocol):
    """A validated run whose memory plan fits, as a family prepares it (stages 1 and 2).

    ``config``: the options with every default filled in; ``backend``: "numba" or "torch"; ``record``: the
    run.json skeleton (config, device, dataset, the memory plan), which the lifecycle writes first;
    ``total_samples``: training samples over all epochs (progress)."""

    config: SimulateConfig
    backend: str
    record: dict
    total_samples: int

    def train(self, training: Training) -> Any:
        """Stage 4: train, returning the family's outcome; a health stop raises engine.health.TrainingStopped with
        the outcome so far."""

    def finish(self, record: dict, outcome: Any, seconds: float, stopped) -> dict[str, np.ndarray]:
        """Stage 5: evaluate and fill ``record`` (status, history, final, counters, energy, memory, stop); return
        the arrays for weights.npz."""


def skeleton(config: dict, device, dataset: str, n_train: int, n_test: int, seed: int) -> dict:
    """The run.json every family starts from (status "running"): its ``config`` record, the device (id, name,
    path, arithmetic, energy table, capacities), the dataset's name and sizes, empty results, the seed and the
    package versions. A killed run leaves at least this."""
    return {
        "schema_version": SCHEMA_VERSION, "status": "running", "config": config,
        "device": {"id": device.id, "name": device.name, "path": device.path, "arithmetic": device.arithmetic.value,
                   "energy_pj": dict(device.energy_pj),
                   "capacity": {"sram_bytes": device.capacity.sram_bytes, "flash_bytes": device.capacity.flash_bytes}},
        "dataset": {"name": dataset, "n_train": int(n_train), "n_test": int(n_test)},
        "history": [], "final": {}, "memory": {}, "counters": {}, "energy": None, "warnings": [],
        "seed": seed, "versions": package_versions(),
    }


def digest(value) -> str:
    """SHA-256 of a JSON-able record (sorted keys) or of an array's bytes: the fingerprints in a checkpoint."""
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _fingerprinted(state: dict, run_id: str, config_sha: str) -> dict:
    """A checkpoint's arrays with the run's id and the fingerprints of its config (as run.json holds it) and
    weights (``state["w"]``): --resume checks all three."""
    return {**state, "run_id": np.array(run_id), "config_sha": np.array(config_sha),
            "w_sha": np.array(digest(state["w"]))}


def owned_checkpoint(run_dir, record: dict) -> dict | None:
    """The last checkpoint of the run in ``run_dir`` (None if it was killed before the first), refused when it
    belongs to another run, another configuration than run.json's, or its weights do not match their fingerprint."""
    checkpoint, run_id = load_checkpoint(run_dir), record.get("run_id")
    if checkpoint is None:
        return None
    owner = str(checkpoint["run_id"]) if "run_id" in checkpoint else None
    if owner != run_id:
        raise RunError(f"--resume {run_dir}: checkpoint.npz belongs to another run (run id {owner}) than "
                       f"run.json ({run_id}); start again with --overwrite")
    if "config_sha" in checkpoint and str(checkpoint["config_sha"]) != digest(record["config"]):
        raise RunError(f"--resume {run_dir}: checkpoint.npz was written for another configuration than "
                       f"run.json records (run.json was edited?); start again with --overwrite")
    if "w_sha" in checkpoint and str(checkpoint["w_sha"]) != digest(checkpoint["w"]):
        raise RunError(f"--resume {run_dir}: checkpoint.npz's weights do not match their fingerprint (the file "
                       f"is damaged); start again with --overwrite")
    return checkpoint


@contextlib.contextmanager
def threads_for(backend: str, threads: int | None):
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


def execute(prepared: PreparedRun, *, resume: str | Path | None = None, run_id: str | None = None,
            checkpoint: dict | None = None, on_batch: Callable[[int], None] | None = None,
            on_start: Callable[[int], None] | None = None) -> tuple[Path, dict]:
    """Stages 3 to 5 of ``prepared`` (module docstring); returns (run directory, the record written).

    ``resume``: the run directory being continued (its ``run_id`` and last ``checkpoint``, None to start over in
    it). Raises RunError after recording a health stop, RunInterrupted after recording an interruption."""
    config = prepared.config
    run_dir = prepare_run_dir(config.out or default_run_dir(config),
                              "resume" if resume is not None else "replace" if config.overwrite else "refuse")
    record = prepared.record
    record["run_id"] = run_id or uuid.uuid4().hex  # ties the checkpoints to this run (--resume checks it)
    device_toml = device_text(config.device)[0].encode()
    write_file_atomic(run_dir / "device.toml", lambda handle: handle.write(device_toml))
    if checkpoint is None:
        write_json_atomic(run_dir / "run.json", record)
    config_sha = digest(read_run(run_dir)["config"])  # as run.json holds it: what --resume will compare
    training = Training(on_batch, HealthConfig(config.on_unhealthy, config.saturation_limit, config.stall_steps),
                        config.checkpoint_every,
                        lambda state: save_checkpoint(run_dir, _fingerprinted(state, record["run_id"], config_sha)),
                        checkpoint)
    if on_start is not None:
        on_start(prepared.total_samples)
    started, stopped = time.perf_counter(), None
    try:
        with threads_for(prepared.backend, config.threads):
            outcome = prepared.train(training)
    except TrainingStopped as stop:
        outcome, stopped = stop.outcome, stop.error
    except KeyboardInterrupt:
        record.update(status="interrupted", interrupted={"seconds": time.perf_counter() - started})
        write_json_atomic(run_dir / "run.json", record)
        last = "its last checkpoint" if (run_dir / "checkpoint.npz").exists() else "the start (no checkpoint yet)"
        raise RunInterrupted(f"interrupted; the run is recorded in {run_dir} as interrupted: continue it from "
                             f"{last} with fo-edge simulate --resume {run_dir}") from None
    stored = prepared.finish(record, outcome, time.perf_counter() - started, stopped)
    if stopped is not None:
        record["status"] = "stopped"
        record["stop"] = {"kind": stopped.kind, "layer": stopped.layer, "step": stopped.step, "message": str(stopped)}
    save_weights(run_dir / "weights.npz", stored)
    write_json_atomic(run_dir / "run.json", record)
    if stopped is not None:
        raise RunError(f"{stopped}; the partial run is recorded in {run_dir}")
    return run_dir, record
