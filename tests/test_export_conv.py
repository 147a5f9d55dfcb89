"""Conv runs leave as ONNX like MLP runs: fp32 (the host's master weights) against the PyTorch conv forward, and
int8 (the device store) against the Numba conv inference, bit for bit, in onnxruntime."""
import numpy as np
import onnx
import pytest

import fo_edge
from fo_edge.errors import ConfigError, RunError
from fo_edge.export import export_onnx


@pytest.fixture(scope="module", params=["tanh", "relu"])
def conv_int8_run(request, tmp_path_factory):
    """FOTON on mcu-int8's Numba conv path, real MNIST (28x28: two conv layers, two poolings, the dense layer), in
    batches of 8 (32 do not fit its 256 KiB)."""
    out = tmp_path_factory.mktemp(f"conv-{request.param}")
    fo_edge.simulate(rule="foton", device="mcu-int8", model="c4-c8-10", limit=600, lr=0.2, activation=request.param,
                     batch_size=8,
                     rule_options={"temperature": 0.25, "bjorck_iters": 5}, out=str(out))
    return out


def test_int8_conv_export_is_the_device_arithmetic(conv_int8_run):
    report = export_onnx(conv_int8_run, conv_int8_run / "m8.onnx", int8=True)
    assert report["passed"], report
    assert report["prediction_agreement"] == 1.0 and report["max_logit_diff"] == 0.0  # every logit, bit for bit
    assert report["onnx_accuracy"] == report["device_accuracy"] > 0.3  # it learned (chance is 0.1)
    ops = [node.op_type for node in onnx.load(str(conv_int8_run / "m8.onnx")).graph.node]
    assert ops.count("MatMulInteger") == 3 and "Conv" not in ops and "MatMul" not in ops


def test_fp32_conv_export_matches_pytorch(conv_int8_run):
    report = export_onnx(conv_int8_run, conv_int8_run / "m.onnx")
    assert report["passed"] and report["max_abs_diff"] <= 1e-5
    assert report["reference"] == "PyTorch fp32 conv forward"


def test_a_float_conv_run_exports_fp32_and_refuses_int8(tmp_path):
    fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="c4-10", limit=200, out=str(tmp_path / "r"))
    assert export_onnx(tmp_path / "r", tmp_path / "m.onnx")["passed"]
    with pytest.raises(ConfigError, match="does not qualify"):
        export_onnx(tmp_path / "r", tmp_path / "m8.onnx", int8=True)


def test_a_tampered_device_store_is_refused(conv_int8_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(conv_int8_run, run)
    arrays = dict(np.load(run / "weights.npz"))
    arrays["D1"] = arrays["D1"][:, :-1]
    np.savez(run / "weights.npz", **arrays)
    with pytest.raises(RunError, match="D1 / dexp1 should be int32"):
        export_onnx(run, tmp_path / "x.onnx", int8=True)
