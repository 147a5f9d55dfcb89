"""NIR export of a trained spiking run (loihi-like), verified through snnTorch's NIR importer.

The graph (PyPI ``nir``): Input (d_0) -> Linear(W_1) -> CubaLIF -> ... -> Linear(W_L) -> Output, with W_l the
real weights (mantissa x 2**exp, i.e. the integer weights in units of the threshold's scale) and every hidden
layer a CubaLIF whose parameters are the profile's, for snnTorch's discretisation at dt = 1e-4 s per timestep:
  alpha = 1 - dt / tau_syn = 1 - (du + 1) / 4096   (Lava's current decay; du = 4095: tau_syn = dt, no memory)
  beta  = 1 - dt / tau_mem = 1 - dv / 4096         (dv = 0: tau_mem = 2**30 dt, which float32 holds as beta = 1)
  r = tau_mem / dt, w_in = 1, v_leak = v_reset = 0, v_threshold = the profile's threshold (real units)
Spikes fire when v > threshold and reset v to 0 (Lava's reset; snnTorch's reset_mechanism "zero"). The output
is read as the sum of the last Linear's output over the presentation (fo-edge's non-spiking integrator), and the
input is the profile's input code of kernels.spiking (the 8-bit phase-accumulator rate code by default). The graph's metadata records all of this.

What the graph does not hold: Lava Dense's one-step synaptic delay. Every layer delays by one step, and delays
commute with the time-invariant LIF dynamics from zero state, so fo-edge's delayed net read over T steps is the
undelayed graph read over T - L steps (L Dense layers); the verification runs the imported graph for that many
steps (metadata ``readout_steps``). Against the integer device the float graph also lacks the 24-bit wrap of u,
the saturation of v and the rounding of the threshold to the 17-bit vth field; the report gives both agreements.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .runs import TrainedRun, load_trained, real_weights, run_status_note, write_file_atomic, write_json_atomic

__all__ = ["spiking_graph", "export_nir", "NIR_DT", "MIN_NIR_AGREEMENT"]

NIR_DT = 1e-4  # seconds per timestep: the dt snnTorch's NIR importer discretises with
MIN_NIR_AGREEMENT = 0.99
_NO_LEAK_TAU_STEPS = 2.0 ** 30  # tau_mem / dt for dv = 0: beta = 1 - 2**-30, which is 1.0 in float32


def _readout_steps(run: TrainedRun) -> int:
    sp = run.profile.spiking
    return sp.timesteps - sp.delay * (len(run.dims) - 1)


_CODE_TEXT = {
    "rate": "8-bit phase accumulator per pixel: phase += round(256 x); spike and subtract 256 when phase >= 256 "
            "(x in [0, 1])",
    "single": "one spike per pixel at t = 0 where round(256 x) >= 128 (the binarised image, sent once)",
    "ttfs": "time to first spike: one spike per pixel at t = ((256 - round(256 x)) (T - 1) + 128) // 256 where x > 0",
}


def spiking_graph(run: TrainedRun):
    """The run's network as a ``nir.NIRGraph`` (module docstring)."""
    import nir

    sp = run.profile.spiking
    weights = real_weights(run)
    nodes = {"input": nir.Input(input_type=np.array([run.dims[0]]))}
    edges, prev = [], "input"
    tau_syn = NIR_DT * 4096.0 / (sp.du + 1)
    tau_mem = NIR_DT * (4096.0 / sp.dv if sp.dv else _NO_LEAK_TAU_STEPS)
    for l, w in enumerate(weights):
        nodes[f"dense{l}"] = nir.Linear(weight=w.astype(np.float32))
        edges.append((prev, f"dense{l}"))
        prev = f"dense{l}"
        if l < len(weights) - 1:
            n = w.shape[0]
            nodes[f"lif{l}"] = nir.CubaLIF(
                tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem), r=np.full(n, tau_mem / NIR_DT),
                v_leak=np.zeros(n), v_threshold=np.full(n, sp.threshold), v_reset=np.zeros(n), w_in=np.ones(n))
            edges.append((prev, f"lif{l}"))
            prev = f"lif{l}"
    nodes["output"] = nir.Output(output_type=np.array([run.dims[-1]]))
    edges.append((prev, "output"))
    metadata = {"producer": "fo-edge", "device": run.profile.id, "dt_s": NIR_DT, "timesteps": sp.timesteps,
                "synaptic_delay_steps": sp.delay, "readout_steps": _readout_steps(run),
                "readout": "argmax of the output summed over readout_steps timesteps",
                "input_coding": _CODE_TEXT[sp.input_code.value]}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _nir_predict(path: Path, x: np.ndarray, steps: int, code, chunk: int = 1000) -> np.ndarray:
    """Classes from the NIR file read back and imported by snnTorch, run for ``steps`` timesteps on the run's
    input ``code``."""
    import nir
    import torch
    from snntorch import utils
    from snntorch.import_nir import import_from_nir

    from .models.spiking import input_spikes

    with contextlib.redirect_stdout(io.StringIO()):  # the importer reports its graph rewrites on stdout
        net = import_from_nir(nir.read(str(path)))
    labels = np.zeros(len(x), dtype=np.int64)
    with torch.no_grad():
        for begin in range(0, len(x), chunk):
            utils.reset(net)
            total = 0
            for spikes in input_spikes(torch.as_tensor(x[begin:begin + chunk]), steps, code):
                out = net(spikes)
                total = total + (out[0] if isinstance(out, tuple) else out)
            labels[begin:begin + chunk] = total.argmax(1).numpy()
    return labels


def _float_predict(run: TrainedRun, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """fo-edge's own float spiking inference (models.spiking, the snnTorch reference path), profile delay."""
    import torch

    from .models.spiking import SpikingMLP

    net = SpikingMLP([torch.as_tensor(w) for w in real_weights(run)], run.profile.spiking)
    return np.concatenate([net(torch.as_tensor(x[b:b + chunk]))[0].argmax(1).numpy()
                           for b in range(0, len(x), chunk)])


def _device_predict(run: TrainedRun, x: np.ndarray) -> np.ndarray:
    """The integer loihi-like inference (kernels.spiking) of the stored weights."""
    from .accounting.memory import MemoryArena
    from .kernels.counters import new_counters
    from .rules.numba_binding import from_stored
    from .rules.spiking_binding import allocate_spiking, spiking_predict

    net = from_stored(run.stored, run.profile)
    bufs = allocate_spiking(MemoryArena(2**40, 2**40), run.profile, net.dims, 256, "ftp")
    return spiking_predict(net, bufs, run.profile, x, new_counters(net.n_layers))


def export_nir(run_dir: str | Path, out: str | Path) -> dict:
    """Write ``out`` (.nir) atomically, verify it (module docstring) on the run's test set, and write the report to
    ``out`` + ``.verify.json``. Returns the report; ``report["passed"]`` says whether it verified."""
    import nir

    from .data import load_dataset

    out = Path(out)
    if out.suffix != ".nir":
        raise ConfigError(f"--nir {out}: give a file name ending in .nir")
    if not out.parent.is_dir():
        raise ConfigError(f"--nir {out}: directory {out.parent} does not exist")
    run = load_trained(run_dir, spiking=True)
    if run.profile.spiking is None:
        raise ConfigError(f"--nir exports spiking runs; {run.path} ran on {run.profile.id}, which has no spiking "
                          f"neurons (export it to ONNX with --out)")
    graph = spiking_graph(run)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    write_file_atomic(out, lambda handle: handle.write(buffer.getvalue()))
    cfg = run.record["config"]
    data = load_dataset(cfg["dataset"] if cfg.get("data_dir") is None else None, cfg.get("data_dir"))
    data = data.limited(cfg.get("limit"))
    x, y = data.x_test, data.y_test
    steps = _readout_steps(run)
    nir_labels = _nir_predict(out, x, steps, run.profile.spiking.input_code)
    float_labels = _float_predict(run, x)
    device_labels = _device_predict(run, x)
    agree = float((nir_labels == float_labels).mean())
    report = {"model": str(out), "run": str(run.path), "kind": "nir", "device": run.profile.id,
              "run_status": run.record.get("status"), "note": run_status_note(run.record),
              "test_samples": int(len(x)), "bytes": out.stat().st_size, "readout_steps": steps,
              "timesteps": run.profile.spiking.timesteps, "agreement_float": agree,
              "agreement_device": float((nir_labels == device_labels).mean()), "min_agreement": MIN_NIR_AGREEMENT,
              "passed": agree >= MIN_NIR_AGREEMENT, "nir_accuracy": float((nir_labels == y).mean()),
              "float_accuracy": float((float_labels == y).mean()),
              "device_accuracy": float((device_labels == y).mean()),
              "reference": "fo-edge float spiking inference (snnTorch Leaky, profile delay); the graph imported "
                           "with snntorch.import_nir.import_from_nir"}
    write_json_atomic(Path(str(out) + ".verify.json"), report)
    return report
