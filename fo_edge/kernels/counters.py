"""The one counter schema every device kernel writes: names (NeuroBench's where it has one), phases, slots.

Counters live in an int64 array ``C: (len(PHASES), n_layers + 1, len(COUNTERS))``; a kernel gets the 1-D row
``C[phase, layer]`` and adds to slots by the constants below. Column ``n_layers`` holds work that belongs to no
single layer (input quantisation, output error, FOTON's F refresh). Unused counters stay 0.

Byte counters follow one stated traffic model, not a cycle-accurate one: a matrix-vector kernel reads each
weight once per sample (no reuse across the batch, as CMSIS-NN's fully-connected kernel), reads its input
row once per sample and writes its output row once; an update reads and writes each weight once per step and
reads its two operands once. Crossbar weights are read in the array (``cell_macs``), not as bytes.
"""

__all__ = ["COUNTERS", "PHASES", "TRAINING_PHASES", "new_counters"]

import numpy as np

COUNTERS = (
    "macs_dense",               # multiply-accumulates executed by digital logic, zeros included
    "macs_effective",           # nonzero input x nonzero weight
    "acs_effective",            # accumulate-only operations (binary spikes x nonzero weight)
    "synaptic_events",          # nonzero activation delivered over a nonzero synapse (graded or binary)
    "synaptic_updates",         # weights visited by an update (charged per synapse on event-driven chips)
    "neuron_updates_active",    # neuron outputs computed that are nonzero
    "neuron_updates_inactive",  # neuron outputs computed that are zero
    "spikes",
    "sram_read_bytes",
    "sram_write_bytes",
    "dram_bytes",
    "flash_read_bytes",
    "weight_writes",            # weights whose stored value changed
    "write_pulses",             # crossbar programming pulses
    "cell_macs",                # analog multiply-accumulates inside a crossbar
    "adc_conversions",
    "dac_activations",          # crossbar row activations (one per input value driven)
    "saturation_events",        # values clipped to a format's range (activations, errors, weights, ADC, bounds)
    "overflow_wraps",           # accumulator two's-complement wrap-arounds
    "updates_lost",             # nonzero updates that rounded to no change (0 LSBs / 0 pulses)
    "timesteps",                # spiking: simulated timesteps, one per sample presentation step (barriers)
)
(MACS_DENSE, MACS_EFF, ACS_EFF, SYN_EVENTS, SYN_UPDATES, NEURON_ACTIVE, NEURON_INACTIVE, SPIKES, SRAM_READ,
 SRAM_WRITE, DRAM, FLASH_READ, WEIGHT_WRITES, WRITE_PULSES, CELL_MACS, ADC, DAC, SATURATION, WRAPS, LOST,
 TIMESTEPS) = range(len(COUNTERS))

PHASES = (
    "forward",            # pass 1 (clean forward) and the output error
    "recompute",          # the clean pass re-run in lockstep by the stream schedule (the price of storing nothing)
    "modulated_forward",  # the second pass: modulated input / target projection and its layers
    "backward",           # BP's error propagation through W^T
    "update",             # weight updates
    "orthogonalize",      # FOTON's Björck passes
    "feedback_refresh",   # FOTON's F = W_L ... W_1
    "inference",          # test-set evaluation
)
(FORWARD, RECOMPUTE, MODULATED, BACKWARD, UPDATE, ORTHOGONALIZE, REFRESH, INFERENCE) = range(len(PHASES))
TRAINING_PHASES = PHASES[:INFERENCE]


def new_counters(n_layers: int) -> np.ndarray:
    """Zeros of shape (len(PHASES), n_layers + 1, len(COUNTERS)), int64."""
    return np.zeros((len(PHASES), n_layers + 1, len(COUNTERS)), dtype=np.int64)
