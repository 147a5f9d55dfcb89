"""Sweeps: a TOML grid of rules x devices x models x precisions x seeds, each point a normal ``simulate`` run.

Spec (``[sweep]`` table; a list or ``{ start, stop[, step] }`` range makes an axis, a scalar is fixed)::

    [sweep]
    rule = ["ftp", "bp"]
    device = ["mcu-int8", "loihi-like"]     # ids or .toml paths (relative to the spec file)
    model = ["784-128-10"]
    seed = { start = 0, stop = 2 }
    epochs = 1
    dataset = "mnist"                       # any other SimulateConfig field, e.g. batch_size, limit, lr
    weight_bits = [6, 8]                    # precision overrides: any [formats] key of the device profile

Each point runs into ``OUT/points/NNNN-<name>`` (its own run.json, weights, device.toml); a finished point (below)
is skipped on a rerun; ranges are integers with a nonzero step, every value is range-checked as the command
line's options are (fo_edge.limits), and a grid above MAX_SWEEP_POINTS is refused before anything runs; a failing point is recorded with its error and the
others go on. ``OUT/sweep.json`` lists every point and its status; ``OUT/summary.md``/``summary.csv`` are the
energy-report table across the finished points, with ``energy.png`` and ``pareto.png`` (accuracy vs energy per
training sample, the Pareto front marked; when the points' primary energy modes differ, e.g. mcu-int8's system
mode beside loihi-like's op mode, the front compares every point in op mode, and ``pareto_mode`` says which).
A point counts as finished only if its run is complete and ``point-key.json`` holds the digest of its settings
and of the device profile's and recipe's content (``point_key``): editing a device file reruns its points. Executors: ``local`` (a process pool) or ``ray`` (Ray schedules,
fo-edge runs points; ``ray_address`` joins a cluster).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import time
import tomllib
from pathlib import Path
from typing import Callable

from . import api, report
from .device import device_text
from .device.load import FORMAT_KEYS
from .engine.threads import available_threads
from .errors import ConfigError, FoEdgeError
from .files import TEXT_FILE_BYTES, read_bounded
from .limits import LIMITS, MAX_SWEEP_POINTS, check
from .runs import prepare_run_dir, read_run, write_file_atomic, write_json_atomic

__all__ = ["Point", "load_spec", "expand", "run_sweep", "EXECUTORS"]

EXECUTORS = ("local", "ray")
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(api.SimulateConfig)} - {"out", "rule_options"}


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: ``settings`` (SimulateConfig fields) and ``formats`` (profile overrides)."""

    index: int
    settings: dict
    formats: dict

    @property
    def name(self) -> str:
        parts = [str(self.settings.get(k)) for k in ("rule", "device", "model")]
        parts[1] = Path(parts[1]).stem
        parts += [f"{k}{v}" for k, v in sorted(self.formats.items())]
        parts.append(f"s{self.settings.get('seed', 0)}")
        return f"{self.index:04d}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def _axis(key: str, value):
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"sweep spec: {key} is an empty list")
        return value
    if isinstance(value, dict):
        if not set(value) <= {"start", "stop", "step"} or "start" not in value or "stop" not in value:
            raise ConfigError(f"sweep spec: {key} range needs start and stop (and optionally step)")
        start, stop, step = value["start"], value["stop"], value.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop, step)):
            raise ConfigError(f"sweep spec: {key} range needs integer start, stop and step, got {value}")
        if step == 0:
            raise ConfigError(f"sweep spec: {key} range has step 0")
        span = range(start, stop, step)
        if not span:
            raise ConfigError(f"sweep spec: {key} range is empty")
        if len(span) > MAX_SWEEP_POINTS:
            raise ConfigError(f"sweep spec: {key} range has {len(span):,} values; a sweep holds at most "
                              f"{MAX_SWEEP_POINTS:,} points")
        return list(span)
    return [value]


def load_spec(path: str | Path) -> dict:
    """The ``[sweep]`` table of a spec file, keys checked (device paths made relative to the spec)."""
    path = Path(path)
    try:
        data = tomllib.loads(read_bounded(path, TEXT_FILE_BYTES, "sweep spec", ConfigError).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep spec {path} is not valid TOML: {exc}") from None
    table = data.get("sweep")
    if not isinstance(table, dict) or set(data) != {"sweep"}:
        raise ConfigError(f"sweep spec {path}: put every setting in one [sweep] table")
    unknown = set(table) - _CONFIG_FIELDS - set(FORMAT_KEYS)
    if unknown:
        raise ConfigError(f"sweep spec {path}: unknown keys {sorted(unknown)}; use SimulateConfig fields "
                          f"({', '.join(sorted(_CONFIG_FIELDS))}) or [formats] keys ({', '.join(FORMAT_KEYS)})")
    devices = _axis("device", table.get("device", api.SimulateConfig.device))
    table["device"] = [d if not d.endswith(".toml") else str((path.parent / d).resolve()) for d in devices]
    return table


def expand(spec: dict) -> list[Point]:
    """The cartesian product of the spec's axes, in a stable order."""
    keys = sorted(spec)
    axes = [_axis(k, spec[k]) for k in keys]
    total = math.prod(len(a) for a in axes)
    if total > MAX_SWEEP_POINTS:
        raise ConfigError(f"sweep spec: the grid has {total:,} points; a sweep holds at most {MAX_SWEEP_POINTS:,}")
    for key, axis in zip(keys, axes):
        if key in LIMITS:
            for value in axis:
                check(key, value, f"sweep spec: {key}")
    points = []
    for i, combo in enumerate(itertools.product(*axes)):
        values = dict(zip(keys, combo))
        formats = {k: v for k, v in values.items() if k in FORMAT_KEYS}
        settings = {k: v for k, v in values.items() if k not in FORMAT_KEYS}
        points.append(Point(i, settings, formats))
    return points


def _device_with_overrides(device: str, formats: dict, target: Path) -> str:
    """Write the device profile with ``formats`` overridden to ``target``; returns its path."""
    text, origin = device_text(device)
    for key, value in formats.items():
        pattern = re.compile(rf"^{key}\s*=.*$", re.MULTILINE)
        if not pattern.search(text):
            raise ConfigError(f"device {origin} has no [formats] {key} to override")
        text = pattern.sub(f'{key} = {{ value = {value}, source = "sweep override (was in {origin})" }}', text, 1)
    encoded = text.encode()
    write_file_atomic(target, lambda handle: handle.write(encoded))
    return str(target)


def point_key(point: Point) -> str:
    """A digest of everything a point's result depends on: its settings and format overrides, and the content
    of the device profile and recipe it names (so editing a device file reruns its points)."""
    from .recipe import recipe_text

    settings = dict(point.settings)
    device = settings.get("device", api.SimulateConfig.device)
    content = {"settings": settings, "formats": point.formats, "device": device_text(device)[0],
               "recipe": recipe_text(settings["recipe"])[0] if settings.get("recipe") else None}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


_KEY_FILE = "point-key.json"


def run_point(point: Point, out: str, threads: int = 1) -> dict:
    """Run one point (in a worker) on ``threads`` kernel threads unless the point sets its own (the cores
    shared out among the workers, so that parallel kernels in parallel workers do not oversubscribe them);
    returns its status record. Never raises for a failing point."""
    run_dir = Path(out) / "points" / point.name
    started = time.time()
    try:
        prepare_run_dir(run_dir, "replace")  # a point's directory is the sweep's: an unfinished attempt is redone
        settings = dict(point.settings)
        settings.setdefault("threads", threads)  # a run control: not part of the point's key
        if point.formats:
            settings["device"] = _device_with_overrides(settings.get("device", api.SimulateConfig.device),
                                                        point.formats, run_dir / "device-override.toml")
        key = point_key(point)
        result = api.simulate(api.SimulateConfig(**settings, out=str(run_dir), overwrite=True))
        write_json_atomic(run_dir / _KEY_FILE, {"key": key})
        return {"point": point.name, "status": "complete", "accuracy": result.accuracy,
                "seconds": time.time() - started}
    except Exception as exc:  # the worker boundary: any failure is this point's record, never the sweep's end
        text = str(exc).splitlines()[0] if str(exc) else ""
        message = text if isinstance(exc, FoEdgeError) else f"{type(exc).__name__}: {text}"
        return {"point": point.name, "status": "failed", "error": message, "seconds": time.time() - started}


def _finished(point: Point, out: Path) -> bool:
    """A point is finished when its run is complete and was made from the same settings and file contents."""
    run_dir = out / "points" / point.name
    try:
        record = read_run(run_dir)
        stored = json.loads(read_bounded(run_dir / _KEY_FILE, 4096, "sweep point key", ConfigError))
        key = point_key(point)
    except (FoEdgeError, ValueError):
        return False
    return record.get("status") == "complete" and isinstance(stored, dict) and stored.get("key") == key


def _executor_local(points, out, workers, on_done):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/numba threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        threads = max(1, available_threads() // workers)
        futures = [pool.submit(run_point, p, str(out), threads) for p in points]
        for future in as_completed(futures):
            on_done(future.result())
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _executor_ray(points, out, workers, on_done, address):
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             **({} if address else {"num_cpus": workers}))
    remote = ray.remote(num_cpus=1)(run_point)
    pending = [remote.remote(p, str(out)) for p in points]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(done[0]))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _pareto(rows: list[dict]) -> set[str]:
    """Runs not dominated in (higher accuracy, lower energy per training sample); the rows' energies must all be
    of one mode (run_sweep prices every point in op mode when the points' primary modes differ)."""
    front = set()
    for r in rows:
        if r["train_pj_per_sample"] is None or r["test_accuracy"] is None:
            continue
        dominated = any(o is not r and o["train_pj_per_sample"] is not None and o["test_accuracy"] is not None
                        and o["test_accuracy"] >= r["test_accuracy"]
                        and o["train_pj_per_sample"] <= r["train_pj_per_sample"]
                        and (o["test_accuracy"], -o["train_pj_per_sample"]) !=
                        (r["test_accuracy"], -r["train_pj_per_sample"]) for o in rows)
        if not dominated:
            front.add(r["run"])
    return front


def _plot_pareto(rows: list[dict], front: set[str], path: Path, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for device in sorted({r["device"] for r in rows}):
        pts = [r for r in rows if r["device"] == device and r["train_pj_per_sample"]]
        ax.scatter([r["train_pj_per_sample"] / 1e6 for r in pts], [100 * r["test_accuracy"] for r in pts],
                   label=device)
        for r in pts:
            ax.annotate(r["rule"], (r["train_pj_per_sample"] / 1e6, 100 * r["test_accuracy"]), fontsize=7)
    best = sorted((r for r in rows if r["run"] in front), key=lambda r: r["train_pj_per_sample"])
    ax.plot([r["train_pj_per_sample"] / 1e6 for r in best], [100 * r["test_accuracy"] for r in best], "k--",
            linewidth=1, label="Pareto front")
    ax.set(xscale="log", xlabel=f"energy per training sample (µJ, {mode} mode)", ylabel="test accuracy (%)",
           title="Accuracy vs energy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_file_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def run_sweep(spec_path: str | Path, out: str | Path, *, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, on_progress: Callable[[dict, int, int], None] | None = None) -> dict:
    """Expand, run (skipping finished points), and collate; returns the sweep record (also OUT/sweep.json)."""
    import os

    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    check("workers", workers)
    points = expand(load_spec(spec_path))
    out = prepare_run_dir(out)
    workers = workers or max(1, min(len(points), os.cpu_count() or 1))
    statuses = {p.name: {"point": p.name, "status": "skipped (already complete)"}
                for p in points if _finished(p, out)}
    todo = [p for p in points if p.name not in statuses]

    def on_done(status: dict) -> None:
        statuses[status["point"]] = status
        if on_progress is not None:
            on_progress(status, len(statuses), len(points))

    def record() -> dict:
        return {"spec": str(Path(spec_path).resolve()), "executor": executor, "points": len(points),
                "statuses": [statuses.get(p.name, {"point": p.name, "status": "not run"}) for p in points]}

    try:
        if todo:
            if executor == "local":
                _executor_local(todo, out, workers, on_done)
            else:
                _executor_ray(todo, out, workers, on_done, ray_address)
    finally:
        write_json_atomic(out / "sweep.json", record())
    finished = [out / "points" / p.name for p in points if _finished(p, out)]
    if finished:
        runs = report.load_runs(finished)
        rows = report.comparison_rows(runs)
        modes = {r["energy_mode"] for r in rows if r["energy_mode"]}
        mode = next(iter(modes)) if len(modes) == 1 else "op"  # one mode for every point: op exists everywhere
        compared = rows if len(modes) <= 1 else report.comparison_rows(runs, mode)
        front = _pareto(compared)
        for row in rows:
            row["pareto"] = row["run"] in front
            row["pareto_mode"] = mode
        md, csv_text = report.render(rows, "markdown"), report.render(rows, "csv")
        write_file_atomic(out / "summary.md", lambda handle: handle.write(md.encode() + b"\n"))
        write_file_atomic(out / "summary.csv", lambda handle: handle.write(csv_text.encode() + b"\n"))
        report.plot_runs(rows, out / "energy.png")
        _plot_pareto(compared, front, out / "pareto.png", mode)
    return record()
