"""The conv-net graphs of ONNX export (export.py writes and verifies them): fp32 from the host's master weights,
int8 from the device store of a Numba conv run, and the two references they are verified against.

fp32: models.conv.conv_forward_torch as a module (circular padding as index gathers, Haar pooling, the dense
layer) for ``torch.onnx.export``. int8: the device's arithmetic step by step (kernels.conv), see
:func:`conv_int8_model_bytes`. Both take the input flat, (batch, C*H*W), as the run's data.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .runs import TrainedRun

__all__ = ["conv_torch_module", "conv_torch_logits", "conv_int8_model_bytes", "conv_device_inference"]


def _spec(run: TrainedRun):
    from .models.conv import ConvSpec

    conv = run.record["config"]["conv"]
    return ConvSpec(tuple(int(c) for c in conv["channels"]), int(run.dims[-1]),
                    tuple(int(v) for v in conv["in_shape"]), int(conv["kernel"]))


def _weights(run: TrainedRun) -> list:
    import torch

    n_conv = len(run.record["config"]["conv"]["channels"])
    names = [f"K{l}" for l in range(n_conv)] + [f"W{n_conv}"]
    return [torch.as_tensor(run.stored[name]) for name in names]


def conv_torch_module(run: TrainedRun):
    """The run's conv net as a torch module: x (batch, C*H*W) -> logits (models.conv.conv_forward_torch)."""
    import torch

    from .models.conv import conv_forward_torch

    spec, weights, activation = _spec(run), _weights(run), run.activation

    class ConvNet(torch.nn.Module):
        def forward(self, x):
            return conv_forward_torch(spec, weights, x, activation)

    return ConvNet().eval()


def conv_torch_logits(run: TrainedRun, x: np.ndarray) -> np.ndarray:
    """The PyTorch fp32 conv forward's logits (N, n_classes) on x (N, C*H*W)."""
    import torch

    from .models.conv import conv_forward_torch

    with torch.no_grad():
        return conv_forward_torch(_spec(run), _weights(run), torch.as_tensor(x), run.activation).numpy()


def conv_int8_model_bytes(run: TrainedRun) -> bytes:
    """The integer graph of a conv run's device store (``D{l}``, ``dexp{l}``), the device's arithmetic step by
    step (kernels.conv): per conv layer the circular im2col as one ``Gather`` of the flat int8 map into
    (batch, H W, C_in k k) patches, ``MatMulInteger`` with D_l^T (int32 accumulator), times 2**dexp per output
    channel, ``Round`` (half to even), ``Clip``, the activation on the integer grid, ``Cast`` to int8 and back to
    the channel-major flat map; every layer after the first pools first: the four 2 x 2 block members gathered,
    summed, halved, rounded and clipped. The dense layer is the MLP graph's last layer."""
    from onnx import TensorProto, helper, numpy_helper

    spec, profile, activation = _spec(run), run.profile, run.activation
    if "D0" not in run.stored:
        raise ConfigError(f"{run.path} holds no device store (D0, dexp0): --int8 exports conv runs trained on an "
                          f"integer device's Numba path; export this one without --int8")
    a = profile.activation
    nodes, inits = [], []
    names = iter(range(10 ** 6))

    def const(value, dtype=np.float64) -> str:
        name = f"c{next(names)}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], **attrs) -> str:
        out = f"t{next(names)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    lo, hi, one, step = const(float(a.qmin)), const(float(a.qmax)), const(float(2 ** a.frac_bits)), \
        const(2.0 ** -a.frac_bits)

    def requantise(acc: str, exps: np.ndarray, linear: bool) -> str:
        """int32 sums (..., rows) -> the clipped, activated mantissas (double), as layer_forward_."""
        pre = node("Clip", [node("Round", [node("Mul", [node("Cast", [acc], to=TensorProto.DOUBLE),
                                                        const(2.0 ** exps.astype(np.float64))])]), lo, hi])
        if linear or activation == "identity":
            return pre
        if activation == "relu":
            return node("Relu", [pre])
        tanh = node("Tanh", [node("Mul", [pre, step])])  # tanh on the grid: floor(tanh(a) one + 1/2)
        return node("Floor", [node("Add", [node("Mul", [tanh, one]), const(0.5)])])

    h = node("Cast", [node("Clip", [node("Round", [node("Mul", [node("Cast", ["x"], to=TensorProto.DOUBLE), one])]),
                                    lo, hi])], to=TensorProto.INT8)
    shapes = spec.layer_shapes()
    k, pad = spec.kernel, spec.kernel // 2
    for l in range(spec.n_layers):
        c, hgt, wid = shapes[l]
        if l > 0:  # 2 x 2 block sums of the previous map (C, 2 hgt', 2 wid') / 2
            full_h, full_w = shapes[l - 1][1], shapes[l - 1][2]
            ci, y, x = np.meshgrid(np.arange(c), np.arange(hgt), np.arange(wid), indexing="ij")
            base = (ci * full_h + 2 * y) * full_w + 2 * x
            parts = [node("Cast", [node("Gather", [h, const((base + off).ravel(), np.int64)], axis=1)],
                          to=TensorProto.DOUBLE) for off in (0, 1, full_w, full_w + 1)]
            h = node("Cast", [node("Clip", [node("Round", [node("Mul", [node("Sum", parts), const(0.5)])]), lo, hi])],
                     to=TensorProto.INT8)
        d = run.stored[f"D{l}"]
        exps = run.stored[f"dexp{l}"]
        w_t = const(np.ascontiguousarray(d.T), np.int8)
        if l == spec.n_layers - 1:
            out = requantise(node("MatMulInteger", [h, w_t]), exps, linear=True)
            nodes.append(helper.make_node("Cast", [node("Mul", [out, step])], ["logits"], to=TensorProto.FLOAT))
            break
        y, x, ci, dy, dx = np.meshgrid(np.arange(hgt), np.arange(wid), np.arange(c), np.arange(k), np.arange(k),
                                       indexing="ij")
        index = ci * hgt * wid + ((y + dy - pad) % hgt) * wid + (x + dx - pad) % wid  # kernels.conv.im2col_
        patches = node("Gather", [h, const(index.reshape(hgt * wid, c * k * k), np.int64)], axis=1)
        rows = node("Cast", [requantise(node("MatMulInteger", [patches, w_t]), exps, linear=False)],
                    to=TensorProto.INT8)  # (batch, H W, C_out) pixel-major
        h = node("Flatten", [node("Transpose", [rows], perm=[0, 2, 1])], axis=1)  # channel-major (batch, C_out H W)
    graph = helper.make_graph(
        nodes, f"fo-edge int8 conv {profile.id}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", int(np.prod(spec.in_shape))])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", spec.n_classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fo-edge")
    return model.SerializeToString()


def conv_device_inference(run: TrainedRun, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), real logits (N, n_classes)): the Numba conv inference of x on a device store rebuilt from
    ``D{l}`` / ``dexp{l}``."""
    from .kernels.counters import new_counters
    from .kernels.rng import new_state
    from .rules.conv_binding import ConvDeviceNet, ConvPasses, conv_predict
    from .rules.numba_binding import make_params

    spec, profile = _spec(run), run.profile
    mats = [run.stored[f"D{l}"].astype(np.int64) for l in range(spec.n_layers)]
    exps = [-run.stored[f"dexp{l}"].astype(np.int64) for l in range(spec.n_layers)]
    offs = np.concatenate([[0], np.cumsum([m.size for m in mats])]).astype(np.int64)
    fracs = np.array([e.min() for e in exps], dtype=np.int64)
    net = ConvDeviceNet(spec, np.concatenate([m.ravel() for m in mats]), offs, fracs, (2 ** fracs).astype(np.int64),
                        [m.shape for m in mats], True, [e - f for e, f in zip(exps, fracs)])
    logits = np.zeros((len(x), spec.n_classes))
    labels = conv_predict(ConvPasses(net, 256), profile, make_params(profile, run.activation, "ce"), x,
                          new_counters(spec.n_layers), new_state(0), logits)
    return labels, logits
