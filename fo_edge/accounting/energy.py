"""Energy = counters x the device's unit costs: a pure function from a counters record and an energy table.

Each counter is charged at most once, by the key this table maps it to (a device lacking the key does not
charge it). A profile with ``system_mac_pj`` (a measured whole-system cost per MAC that already includes
memory traffic, e.g. the Cortex-M7 board's 1008.7 pJ) gets a second mode, ``system``, that charges dense MACs
at that price and nothing else; the ``op`` mode charges operations and bytes separately. The two modes are
reported side by side and never added (DEVICES.md 4.2). Static power (``static_mw``) needs a time model and is
listed as not charged rather than guessed.
"""
from __future__ import annotations

import numpy as np

from ..kernels.counters import COUNTERS, INFERENCE, PHASES, TRAINING_PHASES

__all__ = ["OP_CHARGES", "SYSTEM_CHARGES", "energy_record", "energy_of", "format_energy"]

#: counter -> energy key (pJ per event / byte) in op mode
OP_CHARGES = {
    "macs_dense": "mac_pj", "acs_effective": "ac_pj",
    "sram_read_bytes": "sram_byte_pj", "sram_write_bytes": "sram_byte_pj", "dram_bytes": "dram_byte_pj",
    "flash_read_bytes": "flash_byte_pj", "weight_writes": "weight_write_pj",
    "synaptic_events": "synop_pj", "synaptic_updates": "syn_update_pj",
    "neuron_updates_active": "neuron_active_pj", "neuron_updates_inactive": "neuron_inactive_pj",
    "spikes": "spike_pj", "cell_macs": "cell_mac_pj", "adc_conversions": "adc_pj", "dac_activations": "dac_pj",
    "write_pulses": "pulse_pj",
}
#: system mode: one measured all-in price per MAC
SYSTEM_CHARGES = {"macs_dense": "system_mac_pj"}


def _mode(values: np.ndarray, energy_pj: dict, charges: dict, training: int, inference: int,
          layers: list[str]) -> dict:
    """values: (phases, layers, counters); returns pJ by phase, layer and counter, and per sample."""
    unit = np.array([energy_pj.get(charges.get(name, ""), 0.0) for name in COUNTERS])
    pj = values.astype(np.float64) * unit  # (phases, layers, counters)
    by_phase = {p: float(pj[i].sum()) for i, p in enumerate(PHASES)}
    train_pj = sum(by_phase[p] for p in TRAINING_PHASES)
    return {
        "charged": {name: key for name, key in charges.items() if key in energy_pj},
        "total_pj": float(pj.sum()),
        "training_pj": train_pj,
        "inference_pj": by_phase["inference"],
        "per_training_sample_pj": train_pj / training if training else None,
        "per_inference_sample_pj": by_phase["inference"] / inference if inference else None,
        "by_phase_pj": by_phase,
        "per_training_sample_by_phase_pj": {p: by_phase[p] / training if training else None
                                            for p in TRAINING_PHASES},
        "by_layer_pj": {name: float(pj[:INFERENCE, l].sum()) for l, name in enumerate(layers)},
        "by_counter_pj": {name: float(pj[:, :, c].sum()) for c, name in enumerate(COUNTERS) if unit[c]},
    }


def energy_record(values: np.ndarray, energy_pj: dict[str, float], *, training_samples: int,
                  inference_samples: int, layers: list[str]) -> dict:
    """The ``run.json`` energy record: {"unit": "pJ", "primary": mode, "modes": {mode: {...}}, "not_charged"}.

    values: (phases, layers, counters) int64 counts; energy_pj: the profile's energy table. ``by_layer_pj``
    covers training phases only; the inference phase is in ``by_phase_pj`` and ``per_inference_sample_pj``.
    """
    modes = {"op": _mode(values, energy_pj, OP_CHARGES, training_samples, inference_samples, layers)}
    if "system_mac_pj" in energy_pj:
        modes["system"] = _mode(values, energy_pj, SYSTEM_CHARGES, training_samples, inference_samples, layers)
    not_charged = []
    if "static_mw" in energy_pj:
        not_charged.append("static_mw: static power needs the spiking time model, not charged")
    return {"unit": "pJ", "primary": "system" if "system" in modes else "op", "modes": modes,
            "not_charged": not_charged}


def energy_of(counters: dict, energy_pj: dict[str, float]) -> dict:
    """The energy record of a run.json counters record (accounting.counters.counters_record), with its own sample
    tallies and layer names."""
    from .counters import counters_array

    return energy_record(counters_array(counters), energy_pj, training_samples=counters["training_samples"],
                         inference_samples=counters["inference_samples"], layers=counters["layers"])


def format_energy(pj: float | None) -> str:
    """pJ in the largest unit that keeps the value >= 1 (pJ, nJ, µJ, mJ, J); None -> "n/a"."""
    if pj is None:
        return "n/a"
    value = float(pj)
    for unit in ("pJ", "nJ", "µJ", "mJ"):
        if abs(value) < 1000.0:
            return f"{value:.3g} {unit}"
        value /= 1000.0
    return f"{value:.3g} J"
