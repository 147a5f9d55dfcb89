"""diagnose on saved conv runs: FOTON's conv update against autograd's kernel gradient per layer, and each conv
layer's drift as an operator, checked against the operator written out as a matrix."""
import numpy as np
import pytest
import torch

import fo_edge
from fo_edge.api import diagnose
from fo_edge.diagnose import conv_operator_drift
from fo_edge.errors import ConfigError
from fo_edge.models.conv import bcop_kernel, conv_circular, init_conv_params, parse_conv_spec


def _operator(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The circular convolution as a (C_out H W, C_in H W) matrix, column by column."""
    c_in = kernel.shape[1]
    basis = torch.eye(c_in * h * w, dtype=torch.float64).reshape(-1, c_in, h, w)
    return conv_circular(basis, kernel.to(torch.float64)).reshape(c_in * h * w, -1).T


@pytest.mark.parametrize("c_out, c_in, k, h, w", [(4, 1, 3, 8, 8), (2, 3, 3, 5, 6), (3, 3, 1, 4, 4), (5, 2, 5, 6, 6)])
def test_operator_drift_equals_the_explicit_gram(c_out, c_in, k, h, w):
    kernel = torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(c_out * 7 + k))
    a = _operator(kernel, h, w)
    gram = a.T @ a if c_out >= c_in else a @ a.T
    expected = float(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype)))
    assert conv_operator_drift(kernel, h, w) == pytest.approx(expected, rel=1e-9)


def test_a_bcop_kernel_is_an_orthogonal_operator():
    spec = parse_conv_spec("c8-10", (1, 8, 8))
    params = init_conv_params(spec, seed=2)
    kernel = bcop_kernel(params[0]["h"], params[0]["qs"], 1, 8)
    assert conv_operator_drift(kernel, 8, 8) < 1e-9


def test_diagnose_reads_a_saved_conv_run(tmp_path):
    fo_edge.simulate(rule="foton", device="gpu-fp32", dataset="digits", model="c4-c8-10", limit=300, lr=0.2,
                     rule_options={"temperature": 0.25}, out=str(tmp_path / "r"))
    result = diagnose(str(tmp_path / "r"))
    assert result["layers"] == 3 and len(result["cosine"][0]) == 3 and len(result["drift"][0]) == 3
    assert all(-1.0 <= c <= 1.0 for c in result["cosine"][0])
    assert result["cosine"][0][-1] == pytest.approx(1.0)  # the dense layer's FOTON update is e^T u: BP's
    assert max(result["drift"][0]) < 1e-6  # BCOP kernels and a Björck-ed dense W stay orthogonal
    bp = fo_edge.simulate(rule="bp", device="gpu-fp32", dataset="digits", model="c4-10", limit=200,
                          out=str(tmp_path / "bp"))
    assert np.allclose(diagnose(str(bp.run_dir))["cosine"][0], 1.0)
    with pytest.raises(ConfigError, match="conv nets are diagnosed from a saved run"):
        diagnose(None, rule="foton", model="c4-10", dataset="digits", steps=2, every=1)
