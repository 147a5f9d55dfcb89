"""ONNX export of a trained run, verified in onnxruntime before anyone relies on it.

fp32: the real-valued MLP (mantissa x 2**exp for integer runs) through ``torch.onnx.export``; verified against
the PyTorch forward on the run's test set (max |logit difference| <= 1e-5).

int8: an integer graph whose arithmetic is the device's, for 8-bit profiles with nearest-even requantisation
(mcu-int8). Per layer: ``MatMulInteger`` (int8 x int8 -> int32, the device's int32 accumulator), the sum times
2**-frac_l in double (exact), ``Round`` (half to even, the device's requantisation), ``Clip`` to the int8 range,
the activation on the integer grid (ReLU; tanh as floor(tanh(a) * one + 0.5)), and ``Cast`` back to int8. The
input is quantised with the activation format's scale and the logits leave as float (mantissa x 2**-frac).
Verified against the Numba device inference on the test set: predictions identical on >= 99.9 % of samples
and logits within one activation step. Conv runs: the graphs of export_conv, verified the same way (fp32 against
the PyTorch conv forward, int8 against the Numba conv inference). MANO runs (fp32 only: they train on float
devices): the network rebuilt from the run's options and weights.npz (mano_run), exported with its batch dynamic
(input x: (batch, C*S*S) images or (batch, n, n) Darcy coefficients as training scaled them; output ``logits``,
or ``u`` over the run's solution scale) and verified against the PyTorch forward on the run's test inputs like
the fp32 MLP graph; the report gives the graph's accuracy or relative L2 error.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from .device import DeviceProfile
from .device.spec import Overflow, Rounding
from .errors import ConfigError
from .export_conv import conv_device_inference, conv_int8_model_bytes, conv_torch_logits, conv_torch_module
from .mano_run import task_score, trained_mano
from .runs import (TrainedRun, load_trained, read_run, real_weights, run_status_note, write_file_atomic,
                   write_json_atomic)

__all__ = ["export_onnx", "FP32_ATOL", "MIN_AGREEMENT"]

FP32_ATOL = 1e-5
MIN_AGREEMENT = 0.999


def _fp32_model_bytes(weights: list[np.ndarray], activation: str) -> bytes:
    import torch

    from .models.mlp import MLP

    return _exported(MLP([torch.as_tensor(w) for w in weights], activation).eval(), (weights[0].shape[1],))


def _exported(model, sample: tuple[int, ...], output: str = "logits") -> bytes:
    """``model`` (input x: (batch, *sample) float32 -> ``output``) as ONNX bytes, the batch dimension dynamic."""
    import torch

    example = (torch.zeros(2, *sample),)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it warns about optional torchvision ops an MLP never uses
    try:
        # the exporter reports progress on stdout
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, example, dynamo=True, input_names=["x"], output_names=[output],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
    finally:
        exporter_log.setLevel(level)
    return program.model_proto.SerializeToString()


def _check_int8_device(profile: DeviceProfile) -> None:
    problems = []
    if profile.is_float or profile.analog is not None:
        problems.append(f"it is {profile.arithmetic.value}")
    else:
        if profile.weight.bits > 8 or profile.activation.bits > 8:
            problems.append(f"its weights/activations are {profile.weight.bits}/{profile.activation.bits} bits")
        if profile.forward_rounding is not Rounding.NEAREST_EVEN:
            problems.append(f"it requantises {profile.forward_rounding.value}")
        if profile.accumulator_bits != 32 or profile.accumulator_overflow is not Overflow.WRAP:
            problems.append("its accumulator is not a wrapping int32")
    if problems:
        raise ConfigError(f"--int8 builds the integer graph of 8-bit devices with nearest-even requantisation and "
                          f"int32 accumulators (mcu-int8); device {profile.id} does not qualify: "
                          f"{'; '.join(problems)} (export it without --int8)")


def _int8_model_bytes(run: TrainedRun) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    profile, dims = run.profile, run.dims
    a = profile.activation
    one = float(2 ** a.frac_bits)
    nodes, inits = [], []

    def const(name, value, dtype=np.float64):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    lo, hi = const("qmin", float(a.qmin)), const("qmax", float(a.qmax))
    const("act_one", one)
    const("act_step", 1.0 / one)
    if run.activation == "tanh":
        const("half", 0.5)
    nodes += [helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
              helper.make_node("Mul", ["x64", "act_one"], ["x_scaled"]),
              helper.make_node("Round", ["x_scaled"], ["x_round"]),
              helper.make_node("Clip", ["x_round", lo, hi], ["x_clip"]),
              helper.make_node("Cast", ["x_clip"], ["h0"], to=TensorProto.INT8)]
    h = "h0"
    n_layers = len(dims) - 1
    for l in range(n_layers):
        w_t = np.ascontiguousarray(run.stored[f"W{l}"].T).astype(np.int8)  # (d_in, d_out)
        inits.append(numpy_helper.from_array(w_t, f"W{l}_t"))
        # 2**exp: a scalar, or one per output channel (per-channel scales), broadcast over acc's last axis
        scale = const(f"shift{l}", 2.0 ** run.stored[f"exp{l}"].astype(np.float64))
        p = f"l{l}_"
        nodes += [helper.make_node("MatMulInteger", [h, f"W{l}_t"], [p + "acc"]),
                  helper.make_node("Cast", [p + "acc"], [p + "acc64"], to=TensorProto.DOUBLE),
                  helper.make_node("Mul", [p + "acc64", scale], [p + "scaled"]),
                  helper.make_node("Round", [p + "scaled"], [p + "round"]),
                  helper.make_node("Clip", [p + "round", lo, hi], [p + "pre"])]
        out = p + "pre"
        if l < n_layers - 1 and run.activation == "relu":
            nodes.append(helper.make_node("Relu", [out], [p + "act"]))
            out = p + "act"
        elif l < n_layers - 1 and run.activation == "tanh":
            nodes += [helper.make_node("Mul", [out, "act_step"], [p + "real"]),
                      helper.make_node("Tanh", [p + "real"], [p + "tanh"]),
                      helper.make_node("Mul", [p + "tanh", "act_one"], [p + "tanh_q"]),
                      helper.make_node("Add", [p + "tanh_q", "half"], [p + "tanh_h"]),
                      helper.make_node("Floor", [p + "tanh_h"], [p + "act"])]
            out = p + "act"
        if l < n_layers - 1:
            nodes.append(helper.make_node("Cast", [out], [f"h{l + 1}"], to=TensorProto.INT8))
            h = f"h{l + 1}"
        else:
            nodes += [helper.make_node("Mul", [out, "act_step"], ["logits64"]),
                      helper.make_node("Cast", ["logits64"], ["logits"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, f"fo-edge int8 {profile.id}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", dims[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fo-edge")
    return model.SerializeToString()


def _ort_logits(model_bytes: bytes, x: np.ndarray, output: str = "logits") -> np.ndarray:
    """The graph's ``output`` for input x in onnxruntime (CPU, the graph as written)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run([output], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


def _verify_fp32(run: TrainedRun, model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    import torch

    from .models.mlp import MLP

    weights = real_weights(run)
    with torch.no_grad():
        ref = MLP([torch.as_tensor(w) for w in weights], run.activation)(torch.as_tensor(x)).numpy()
    got = _ort_logits(model_bytes, x)
    diff = float(np.abs(got - ref).max())
    return {"max_abs_diff": diff, "tolerance": FP32_ATOL, "passed": diff <= FP32_ATOL,
            "onnx_accuracy": float((got.argmax(1) == y).mean()), "reference": "PyTorch fp32 forward"}


def _verify_int8(run: TrainedRun, model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    from .accounting.memory import MemoryArena
    from .kernels.counters import new_counters
    from .kernels.rng import new_state
    from .rules.numba_binding import allocate_buffers, from_stored, make_params, predict

    profile = run.profile
    net = from_stored(run.stored, profile)
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, 256, "ftp", "stream", ortho=False)
    params = make_params(profile, run.activation, "ce")
    logits = np.zeros((len(x), run.dims[-1]))
    labels = predict(net, bufs, profile, params, x, new_counters(net.n_layers), new_state(0), logits)
    return _int8_agreement(profile, model_bytes, x, y, labels, logits)


def _int8_agreement(profile: DeviceProfile, model_bytes: bytes, x: np.ndarray, y: np.ndarray, labels: np.ndarray,
                    logits: np.ndarray) -> dict:
    """The int8 graph's logits on x against the device's (labels, real logits): the verification report."""
    got = _ort_logits(model_bytes, x)
    agree = float((got.argmax(1) == labels).mean())
    step = 2.0 ** -profile.activation.frac_bits
    diff = float(np.abs(got.astype(np.float64) - logits).max())
    return {"prediction_agreement": agree, "min_agreement": MIN_AGREEMENT, "max_logit_diff": diff,
            "logit_tolerance": step, "passed": agree >= MIN_AGREEMENT and diff <= step + 1e-12,
            "onnx_accuracy": float((got.argmax(1) == y).mean()), "device_accuracy": float((labels == y).mean()),
            "reference": f"Numba {profile.id} device inference"}


def _verify_conv_fp32(run: TrainedRun, model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    ref = conv_torch_logits(run, x)
    got = _ort_logits(model_bytes, x)
    diff = float(np.abs(got - ref).max())
    return {"max_abs_diff": diff, "tolerance": FP32_ATOL, "passed": diff <= FP32_ATOL,
            "onnx_accuracy": float((got.argmax(1) == y).mean()), "reference": "PyTorch fp32 conv forward"}


def _verify_conv_int8(run: TrainedRun, model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    labels, logits = conv_device_inference(run, x)
    return _int8_agreement(run.profile, model_bytes, x, y, labels, logits)


def export_onnx(run_dir: str | Path, out: str | Path, *, int8: bool = False) -> dict:
    """Write ``out`` (.onnx) atomically, verify it in onnxruntime on the run's test set, and write the report
    to ``out`` + ``.verify.json``. Returns the report; ``report["passed"]`` says whether it verified."""
    from .data import load_dataset

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: give a file name ending in .onnx")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: directory {out.parent} does not exist")
    record = read_run(run_dir)
    if record["config"].get("mano"):
        if int8:
            raise ConfigError(f"--int8: {run_dir} is a MANO run, trained on a float device; export it without --int8")
        return _export_mano(run_dir, record, out)
    run = load_trained(run_dir, conv=True)
    conv = bool(run.record["config"].get("conv"))
    if int8:
        _check_int8_device(run.profile)
        model_bytes = conv_int8_model_bytes(run) if conv else _int8_model_bytes(run)
    elif conv:
        model_bytes = _exported(conv_torch_module(run), (int(np.prod(run.record["config"]["conv"]["in_shape"])),))
    else:
        model_bytes = _fp32_model_bytes(real_weights(run), run.activation)
    write_file_atomic(out, lambda handle: handle.write(model_bytes))
    cfg = run.record["config"].get("simulate") if conv else run.record["config"]
    data = load_dataset(cfg["dataset"] if cfg.get("data_dir") is None else None, cfg.get("data_dir"))
    data = data.limited(cfg.get("limit"))
    verify = {(True, True): _verify_conv_int8, (True, False): _verify_int8, (False, True): _verify_conv_fp32,
              (False, False): _verify_fp32}[(int8, conv)]
    report = {"model": str(out), "run": str(run.path), "kind": "int8" if int8 else "fp32",
              "device": run.profile.id, "test_samples": int(len(data.x_test)), "bytes": len(model_bytes),
              "run_status": run.record.get("status"), "note": run_status_note(run.record),
              **verify(run, model_bytes, data.x_test, data.y_test)}
    write_json_atomic(Path(str(out) + ".verify.json"), report)
    return report


def _export_mano(run_dir, record: dict, out: Path) -> dict:
    """fp32 ONNX of a MANO run (its network rebuilt from the recorded options, its weights.npz loaded by name),
    verified against the PyTorch forward on the run's test inputs (max |output difference| <= FP32_ATOL)."""
    import torch

    model, task, _ = trained_mano(run_dir, record)
    output = "u" if task.field else "logits"
    model_bytes = _exported(model, tuple(task.x_test.shape[1:]), output)
    write_file_atomic(out, lambda handle: handle.write(model_bytes))
    with torch.no_grad():
        ref = np.concatenate([model(torch.as_tensor(task.x_test[b:b + 500])).numpy()
                              for b in range(0, len(task.x_test), 500)])
    got = _ort_logits(model_bytes, task.x_test, output)
    diff = float(np.abs(got - ref).max())
    metric = ("onnx_relative_l2" if task.field else "onnx_accuracy", task_score(task, got))
    report = {"model": str(out), "run": str(run_dir), "kind": "fp32", "device": record["config"]["device"],
              "test_samples": int(len(task.x_test)), "bytes": len(model_bytes), "run_status": record.get("status"),
              "note": run_status_note(record), "max_abs_diff": diff, "tolerance": FP32_ATOL,
              "passed": diff <= FP32_ATOL, metric[0]: metric[1], "reference": "PyTorch fp32 MANO forward"}
    write_json_atomic(Path(str(out) + ".verify.json"), report)
    return report
