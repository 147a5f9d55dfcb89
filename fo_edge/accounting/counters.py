"""Counters as data: the kernels' (phase, layer, counter) array turned into the ``run.json`` record and back.

The record keeps every value (unused counters are 0, not missing) in one compact nested list, plus totals by
name and by phase for people and tables::

    {"names": [...COUNTERS], "phases": [...PHASES], "layers": ["layer_1", ..., "layer_L", "network"],
     "values": [[[int, ...] per layer] per phase], "totals": {name: int}, "by_phase": {phase: {name: int}},
     "training_samples": int, "inference_samples": int}
"""
from __future__ import annotations

import numpy as np

from ..errors import RunError
from ..kernels.counters import COUNTERS, PHASES

__all__ = ["counters_record", "counters_array", "layer_names"]


def layer_names(n_layers: int) -> list[str]:
    """``layer_1`` .. ``layer_L`` then ``network`` (work belonging to no single layer)."""
    return [f"layer_{l + 1}" for l in range(n_layers)] + ["network"]


def counters_record(counters: np.ndarray, *, training_samples: int, inference_samples: int) -> dict:
    """counters: (len(PHASES), L + 1, len(COUNTERS)) int64 -> the JSON record described above."""
    if counters.shape[0] != len(PHASES) or counters.shape[2] != len(COUNTERS):
        raise ValueError(f"counters must be (phases, layers, names), got {counters.shape}")
    by_phase = counters.sum(axis=1)
    return {
        "names": list(COUNTERS),
        "phases": list(PHASES),
        "layers": layer_names(counters.shape[1] - 1),
        "values": counters.tolist(),
        "totals": {n: int(v) for n, v in zip(COUNTERS, by_phase.sum(axis=0))},
        "by_phase": {p: {n: int(v) for n, v in zip(COUNTERS, row)} for p, row in zip(PHASES, by_phase)},
        "training_samples": int(training_samples),
        "inference_samples": int(inference_samples),
    }


def counters_array(record: dict) -> np.ndarray:
    """The (phases, layers, names) int64 array of a record, reordered to this version's schema (names or phases
    a record lacks read as 0); a malformed record raises RunError."""
    try:
        values = np.asarray(record["values"], dtype=np.int64)
        names, phases = list(record["names"]), list(record["phases"])
        if values.ndim != 3 or values.shape[0] != len(phases) or values.shape[2] != len(names):
            raise ValueError("values do not match names/phases")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"counters record is malformed ({exc})") from None
    out = np.zeros((len(PHASES), values.shape[1], len(COUNTERS)), dtype=np.int64)
    for p, phase in enumerate(phases):
        if phase in PHASES:
            for n, name in enumerate(names):
                if name in COUNTERS:
                    out[PHASES.index(phase), :, COUNTERS.index(name)] = values[p, :, n]
    return out
