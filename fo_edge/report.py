"""Energy and memory reports from run directories: comparison rows, per-layer rows, text/Markdown/CSV/JSON
rendering and plots. Knows nothing about training: it reads ``run.json`` files only (NeuroBench's split).

Energies are in pJ in the data (``*_pj`` keys) and in readable units in the text tables. A run's energy has one
or two modes (``op``; ``system`` for devices with a measured all-in pJ/MAC); ``mode=None`` takes each run's
primary mode, a named mode falls back to ``op`` where a run lacks it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .accounting.energy import format_energy
from .accounting.memory import format_bytes
from .errors import RunError
from .kernels.counters import TRAINING_PHASES
from .runs import read_run, write_file_atomic

__all__ = ["load_runs", "comparison_rows", "layer_rows", "render", "plot_runs", "FORMATS"]

FORMATS = ("table", "markdown", "json", "csv")


def load_runs(paths) -> list[tuple[str, dict]]:
    """(label, record) per run directory; the label is the directory name (made unique with its parent)."""
    if not paths:
        raise RunError("give at least one run directory")
    runs = [(Path(p), read_run(p)) for p in paths]
    names = [p.name for p, _ in runs]
    return [(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}", rec) for p, rec in runs]


def _mode(record: dict, mode: str | None) -> tuple[str | None, dict | None]:
    energy = record.get("energy")
    if not energy:
        return None, None
    name = mode if mode in energy["modes"] else ("op" if mode else energy["primary"])
    return name, energy["modes"][name]


def comparison_rows(runs: list[tuple[str, dict]], mode: str | None = None) -> list[dict]:
    """One row per run: rule, device, model, accuracy, energy per sample (total and by training phase), spiking
    devices' static energy per sample, device time per training sample and cores (charged for static power, and
    fo-edge's tight packing), peak memory and capacity.
    Energies in pJ (None where the run has no energy, e.g. the snnTorch path, or no static term)."""
    rows = []
    for label, rec in runs:
        cfg, mem = rec["config"], rec["memory"]
        mode_name, energy = _mode(rec, mode)
        row = {"run": label, "rule": cfg["rule"], "device": rec["device"]["id"], "model": cfg["model"],
               "depth": cfg["mano"]["depth"] if cfg.get("mano") else len(cfg["dims"]) - 1,
               "status": rec.get("status"),
               "test_accuracy": rec["final"].get("test_accuracy"),
               "relative_l2": rec["final"].get("relative_l2"),
               "energy_mode": mode_name,
               "train_pj_per_sample": energy["per_training_sample_pj"] if energy else None,
               "inference_pj_per_sample": energy["per_inference_sample_pj"] if energy else None}
        for phase in TRAINING_PHASES:
            row[f"{phase}_pj_per_sample"] = energy["per_training_sample_by_phase_pj"][phase] if energy else None
        static = (rec.get("energy") or {}).get("static") or {}  # spiking devices: accounting.spiking_time
        row["static_train_pj_per_sample"] = static.get("per_training_sample_pj")
        row["static_inference_pj_per_sample"] = static.get("per_inference_sample_pj")
        row["device_train_s_per_sample"] = (static["training_s"] / rec["counters"]["training_samples"]
                                            if static and rec["counters"].get("training_samples") else None)
        row["cores"] = static.get("cores_charged", static.get("cores_used"))  # the mapping's, static is charged for
        row["cores_tight"] = static.get("cores_used")
        row["peak_memory_bytes"] = mem.get("peak_bytes")
        row["capacity_bytes"] = mem.get("capacity_bytes")
        rows.append(row)
    return rows


def layer_rows(runs: list[tuple[str, dict]], mode: str | None = None) -> list[dict]:
    """One row per run and layer: training MACs (dense) and training energy per sample, with its share."""
    rows = []
    for label, rec in runs:
        _, energy = _mode(rec, mode)
        counters = rec["counters"]
        if not counters or not energy:
            continue
        names, phases = counters["names"], counters["phases"]
        macs = names.index("macs_dense")
        train = [i for i, p in enumerate(phases) if p in TRAINING_PHASES]
        samples = max(counters["training_samples"], 1)
        total = sum(energy["by_layer_pj"].values()) or 1.0
        for l, layer in enumerate(counters["layers"]):
            layer_macs = sum(counters["values"][p][l][macs] for p in train)
            pj = energy["by_layer_pj"][layer]
            rows.append({"run": label, "layer": layer, "train_macs_per_sample": layer_macs / samples,
                         "train_pj_per_sample": pj / samples, "share": pj / total})
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key.endswith("_pj_per_sample"):
        return format_energy(value)
    if key == "device_train_s_per_sample":
        return f"{value * 1e3:.3g} ms"
    if key.endswith("_bytes"):
        return format_bytes(value)
    if key == "test_accuracy":
        return f"{100 * value:.2f} %"
    if key == "share":
        return f"{100 * value:.1f} %"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


#: comparison columns left out of text tables when no run has them (Darcy's error, spiking-only terms)
_OPTIONAL = ("relative_l2", "static_train_pj_per_sample", "static_inference_pj_per_sample", "device_train_s_per_sample", "cores",
             "cores_tight")


def _drop_empty_phases(rows: list[dict]) -> list[dict]:
    empty = [f"{p}_pj_per_sample" for p in TRAINING_PHASES
             if all(not r.get(f"{p}_pj_per_sample") for r in rows)]
    empty += [k for k in _OPTIONAL if all(r.get(k) is None for r in rows)]
    return [{k: v for k, v in r.items() if k not in empty} for r in rows]


def render(rows: list[dict], fmt: str) -> str:
    """rows (dicts with the same keys) as ``table`` (aligned text), ``markdown``, ``json`` or ``csv``."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if not rows:
        return ""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    rows = _drop_empty_phases(rows) if "train_pj_per_sample" in rows[0] and "layer" not in rows[0] else rows
    keys = list(rows[0])
    heads = [k.replace("_pj_per_sample", " E/sample").replace("_s_per_sample", " time/sample").replace("_bytes", "")
             .replace("_", " ") for k in keys]
    cells = [[_cell(k, r[k]) for k in keys] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def plot_runs(rows: list[dict], path: str | Path) -> None:
    """Stacked energy-per-training-sample bars by phase, one per run; and peak memory vs depth per rule/device
    when the runs differ in depth. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = {r["depth"] for r in rows}
    with_energy = [r for r in rows if r["train_pj_per_sample"] is not None]
    panels = 1 + (len(depths) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    bottom = [0.0] * len(with_energy)
    for phase in TRAINING_PHASES:
        key = f"{phase}_pj_per_sample"
        heights = [(r[key] or 0.0) / 1e6 for r in with_energy]
        if any(heights):
            ax.bar(range(len(with_energy)), heights, bottom=bottom, label=phase.replace("_", " "))
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(range(len(with_energy)), [f"{r['rule']}\n{r['device']}\n{r['model']}" for r in with_energy],
                  fontsize=7)
    ax.set_ylabel("energy per training sample (µJ)")
    ax.set_title("Training energy by phase")
    if with_energy:
        ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0][1]
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            if r["peak_memory_bytes"]:
                groups.setdefault((r["rule"], r["device"]), []).append(r)
        for (rule, device), members in sorted(groups.items()):
            members.sort(key=lambda r: r["depth"])
            ax.plot([r["depth"] for r in members], [r["peak_memory_bytes"] / 1024 for r in members], marker="o",
                    label=f"{rule} / {device}")
        for capacity in sorted({r["capacity_bytes"] for r in rows if r["capacity_bytes"]}):
            ax.axhline(capacity / 1024, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("depth (weight layers)")
        ax.set_ylabel("peak device memory (KiB)")
        ax.set_yscale("log")
        ax.set_title("Peak memory vs depth (dashed: capacity)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_file_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)
