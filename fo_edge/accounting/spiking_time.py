"""The spiking device's time model and the static energy it implies (DEVICES.md 7.3, davies2018 Table 2).

Cores work in parallel and meet at a barrier every timestep. Per phase, layer l's work is
``synaptic_events x synop_ns + active x neuron_active_ns + inactive x neuron_inactive_ns`` (plus
``synaptic_updates x syn_update_ns`` for the learning engine), spread over the layer's cores; the phase takes
the slowest layer's share plus one barrier per timestep. This sums each layer's work over the whole phase
before taking the maximum, so it is a lower bound on the per-timestep maximum it stands for. Static energy is
``static_mw / cores_per_chip`` per core over that time, charged for the cores the mapping occupies: fo-edge's
tight packing (``cores_used``, the fewest cores that hold the net) unless the profile's ``occupied_cores``
names a larger mapping (another tool's placement, e.g. Renner et al.'s nBP on cores 0-95), which is then
charged (``cores_charged``), with the tight packing's static energy shown beside it (``tight``).
"""
from __future__ import annotations

import numpy as np

from ..device.spec import SpikingParams
from ..kernels.counters import COUNTERS, INFERENCE, PHASES, TIMESTEPS, TRAINING_PHASES

__all__ = ["phase_seconds", "static_record"]


def phase_seconds(values: np.ndarray, cores: list[int], sp: SpikingParams) -> dict[str, float]:
    """values: (phases, L + 1, counters) counts; cores: per layer. Returns seconds per phase."""
    idx = {name: COUNTERS.index(name) for name in ("synaptic_events", "synaptic_updates",
                                                     "neuron_updates_active", "neuron_updates_inactive")}
    out = {}
    for p, phase in enumerate(PHASES):
        layers = values[p, :len(cores)]
        work_ns = (layers[:, idx["synaptic_events"]] * sp.synop_ns
                   + layers[:, idx["synaptic_updates"]] * sp.syn_update_ns
                   + layers[:, idx["neuron_updates_active"]] * sp.neuron_active_ns
                   + layers[:, idx["neuron_updates_inactive"]] * sp.neuron_inactive_ns)
        slowest = float(np.max(work_ns / np.asarray(cores, dtype=np.float64))) if len(cores) else 0.0
        out[phase] = (slowest + float(values[p, len(cores), TIMESTEPS]) * sp.barrier_ns) * 1e-9
    return out


def static_record(values: np.ndarray, cores: list[int], sp: SpikingParams, static_mw: float, *,
                  training_samples: int, inference_samples: int) -> dict:
    """Estimated time and static energy (pJ), in total and per training / inference sample, for the cores
    charged (module docstring); ``tight`` holds the same static figures for fo-edge's tight packing."""
    seconds = phase_seconds(values, cores, sp)
    used = int(sum(cores))
    charged = max(used, sp.occupied_cores)
    train_s = sum(seconds[p] for p in TRAINING_PHASES)
    infer_s = seconds[PHASES[INFERENCE]]

    def static(n_cores: int) -> dict:
        watts = static_mw * 1e-3 * n_cores / sp.cores_per_chip
        return {"static_mw": static_mw * n_cores / sp.cores_per_chip,
                "training_pj": watts * train_s * 1e12, "inference_pj": watts * infer_s * 1e12,
                "per_training_sample_pj": watts * train_s * 1e12 / training_samples if training_samples else None,
                "per_inference_sample_pj": watts * infer_s * 1e12 / inference_samples if inference_samples else None}

    return {"cores_used": used, "cores_charged": charged, "chips": -(-charged // sp.cores_per_chip),
            "seconds_by_phase": seconds, "training_s": train_s, "inference_s": infer_s, **static(charged),
            "tight": static(used)}
