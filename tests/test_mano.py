"""MANO: multipole attention against full attention in the degenerate case, its bounded-keys structure, the
Darcy generator against its discrete equation, FTP's block-local training, and device inference (bit-exact
against an integer reference)."""
import numpy as np
import pytest
import torch

from fo_edge.darcy import coefficient_field, darcy_dataset, relative_l2, residual, solve_darcy
from fo_edge.device import load_device
from fo_edge.engine.mano_loop import MANOTrainConfig, ftp_step, train_mano
from fo_edge.errors import ConfigError
from fo_edge.models.mano import (MANOClassifier, MANOOperator, MultipoleAttention, attended_keys, full_attention,
                                 levels_for, multipole_attention)
from fo_edge.rules.mano_binding import DeviceLinears


@pytest.mark.parametrize("rows,cols,window", [(4, 4, 4), (5, 7, 8), (6, 6, 6)])
def test_single_level_covering_window_is_full_attention(rows, cols, window):
    gen = torch.Generator().manual_seed(rows * cols)
    q, k, v = (torch.randn(2, 3, rows, cols, 8, generator=gen) for _ in range(3))
    out = multipole_attention(q, k, v, window=window, levels=1)
    assert torch.allclose(out, full_attention(q, k, v), atol=1e-5)


def test_module_matches_full_attention_in_the_degenerate_configuration():
    torch.manual_seed(0)
    fine = MultipoleAttention(16, 2, window=8, levels=1)
    full = MultipoleAttention(16, 2, window=8, levels=1, full=True)
    full.load_state_dict(fine.state_dict())
    x = torch.randn(3, 8, 8, 16)
    assert torch.allclose(fine(x), full(x), atol=1e-5)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_keys_per_query_are_bounded_and_the_coarsest_window_covers_the_grid(size):
    window = 4
    levels = levels_for(size, window)
    most, cover = attended_keys(size, size, window, levels)
    assert most <= levels * window * window  # grows with log(size) levels only, never with size^2
    assert cover == size * size  # global receptive field
    assert most < size * size or size <= window


def test_multipole_output_depends_on_far_keys_through_coarse_levels():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 1, 16, 16, 4) for _ in range(3))
    base = multipole_attention(q, k, v, 4, levels_for(16, 4))
    v2 = v.clone()
    v2[..., 15, 15, :] += 10.0  # a key far outside query (0, 0)'s fine window
    moved = multipole_attention(q, k, v2, 4, levels_for(16, 4))
    assert not torch.allclose(base[..., 0, 0, :], moved[..., 0, 0, :])  # global receptive field
    local = multipole_attention(q, k, v2, 4, 1)
    assert torch.allclose(multipole_attention(q, k, v, 4, 1)[..., 0, 0, :], local[..., 0, 0, :])


@pytest.mark.parametrize("n", [16, 32])
def test_darcy_solutions_satisfy_the_discrete_equation(n):
    rng = np.random.default_rng(n)
    a = coefficient_field(n, rng)
    assert set(np.unique(a)) <= {3.0, 12.0}
    u = solve_darcy(a)
    assert residual(a, u) < 1e-10
    assert u.min() > 0  # f = 1 > 0 with u = 0 on the boundary: the solution is positive inside
    assert relative_l2(u[None], u[None]) == 0.0


def test_darcy_dataset_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FO_EDGE_CACHE", str(tmp_path))
    first = darcy_dataset(8, 4, 2, seed=3)
    assert list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob("*.tmp*"))
    again = darcy_dataset(8, 4, 2, seed=3)
    np.testing.assert_array_equal(first.u_train, again.u_train)
    assert residual(first.a_test[0].astype(np.float64), first.u_test[0].astype(np.float64)) < 1e-5


def test_ftp_step_never_sends_a_gradient_across_a_block_boundary():
    """After one FTP step (block_loss target), block 2's gradient equals that of its local loss alone with its
    input detached."""
    torch.manual_seed(2)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=2, heads=2, patch=2, window=2)
    x, t = torch.rand(4, 64), torch.tensor([1, 2, 3, 4])
    g = torch.randn(8, 10) * 0.1
    config = MANOTrainConfig(rule="ftp", block_loss="target")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ftp_step(model, x, t, config, g, opt)
    got = {n: p.grad.clone() for n, p in model.blocks[1].named_parameters()}
    with torch.no_grad():
        h1 = model.blocks[0](model.stem(x))
        e = torch.softmax(model.head(model.blocks[1](h1)), 1) - torch.nn.functional.one_hot(t, 10).float()
        tau2 = model.blocks[1](h1 - (e @ g.T)[:, None, None, :])
    model.zero_grad()
    (0.5 * ((model.blocks[1](h1) - tau2) ** 2).sum() / 4).backward()
    for n, p in model.blocks[1].named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-6), n


@pytest.mark.parametrize("field", [False, True])
def test_a_readout_step_trains_each_block_on_its_own_readout_alone(field):
    """block_loss readout: block 2 and its readout get the gradient of the task loss of readout_2(block_2(h_1))
    with h_1 detached, nothing else; the stem and block 1 that of readout_1's loss; the readouts are outside the
    model's forward."""
    torch.manual_seed(4)
    if field:
        model = MANOOperator(dim=8, depth=2, heads=2, window=4, size=8, readouts=True)
        x, t = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
        loss = lambda y: 0.5 * ((y - t) ** 2).sum() / 3  # noqa: E731
    else:
        model = MANOClassifier((1, 8, 8), 10, dim=8, depth=2, heads=2, patch=2, window=2, readouts=True)
        x, t = torch.rand(4, 64), torch.tensor([1, 2, 3, 4])
        loss = lambda y: torch.nn.functional.cross_entropy(y, t)  # noqa: E731
    config = MANOTrainConfig(rule="ftp", task="field" if field else "classify")
    assert config.block_loss == "readout" and config.readouts
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ftp_step(model, x, t, config, torch.zeros(8, 10), opt)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    want = {}
    with torch.no_grad():
        h1 = model.blocks[0](model.stem(x))
    for local, params in ((lambda: model.readouts[0](model.blocks[0](model.stem(x))),
                           [*model.blocks[0].named_parameters("blocks.0"), *model.readouts[0].named_parameters(
                               "readouts.0"), *[(n, p) for n, p in model.named_parameters() if n.split(".")[0] in
                                                ("embed", "pos", "lift")]]),
                          (lambda: model.readouts[1](model.blocks[1](h1)),
                           [*model.blocks[1].named_parameters("blocks.1"),
                            *model.readouts[1].named_parameters("readouts.1")])):
        names, ps = zip(*params)
        want.update(zip(names, torch.autograd.grad(loss(local()), ps, allow_unused=True)))
    for name, grad in want.items():
        if grad is not None:
            torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # the forward never runs the readouts
        before = model(x)
        for r in model.readouts:
            r.fc.weight.add_(1.0)
        torch.testing.assert_close(model(x), before)


@pytest.mark.parametrize("rule", ["bp", "ftp"])
def test_mano_operator_learns_darcy_with_either_rule(tmp_path, monkeypatch, rule):
    monkeypatch.setenv("FO_EDGE_CACHE", str(tmp_path))
    data = darcy_dataset(8, 64, 16, seed=0)
    scale = float(data.u_train.std())
    model = MANOOperator(dim=8, depth=2, heads=2, window=4, size=8, readouts=rule == "ftp")

    def evaluate(m):
        with torch.no_grad():
            return relative_l2(m(torch.as_tensor((data.a_test - 7.5) / 4.5)).numpy() * scale, data.u_test)

    before = evaluate(model)
    history = train_mano(model, (data.a_train - 7.5) / 4.5, data.u_train / scale,
                         MANOTrainConfig(rule=rule, task="field", epochs=4, batch_size=8, lr=3e-3), evaluate, 1)
    assert history[-1]["test_metric"] < 0.7 * before


def test_device_linears_run_mano_on_int_kernels():
    torch.manual_seed(3)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=1, heads=2, patch=2, window=2).eval()
    x = torch.rand(5, 64)
    with torch.no_grad():
        ref = model(x)
        with DeviceLinears(model, load_device("fpga-fixed16")) as dev:
            out = model(x)
    assert torch.allclose(out, ref, atol=0.05)
    assert not torch.equal(out, ref)  # the quantised path really ran
    assert dev.counters.sum() > 0
    with pytest.raises(ConfigError):
        DeviceLinears(model, load_device("memristor-rram"))
    with torch.no_grad(), DeviceLinears(model, load_device("fpga-fixed16"), maps=[]) as none:
        assert torch.equal(model(x), ref) and none.counters.sum() == 0  # no map on the device: the float model
    with torch.no_grad(), DeviceLinears(model, load_device("fpga-fixed16"), maps=[0]) as first:
        assert not torch.equal(model(x), ref)
    assert first.counters[:, 0].sum() > 0 and first.counters[:, 1:].sum() == 0
    with pytest.raises(ConfigError, match="maps must index"):
        DeviceLinears(model, load_device("fpga-fixed16"), maps=[len(dev.linears)])


def test_device_linears_keep_blas_single_threaded_inside_the_kernels(tmp_path):
    """The kernels call BLAS inside their OpenMP loops: DeviceLinears limits BLAS to one thread while it is
    entered (else OpenBLAS warns "Detect OpenMP Loop and this application may hang") and gives the limit back on
    exit. Run in a fresh process, where numpy's OpenBLAS starts multi-threaded."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import torch\nfrom threadpoolctl import threadpool_info\n"
        "from fo_edge.device import load_device\nfrom fo_edge.models.mano import MANOClassifier\n"
        "from fo_edge.rules.mano_binding import DeviceLinears\n"
        "torch.manual_seed(0)\nm = MANOClassifier((1, 28, 28), 10, dim=32)\n"
        "blas = lambda: [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "before = blas()\n"
        "with torch.no_grad(), DeviceLinears(m, load_device('mcu-int8')):\n"
        "    inside = blas()\n    m(torch.rand(64, 784))\n"
        "print(before == blas(), set(inside) == {1})\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OpenMP Loop" not in proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_calibrated_exponents_fit_each_maps_largest_value_in_the_formats_width():
    """A calibrated map's format holds the largest value it reads or writes on the calibration inputs, and one more
    fraction bit would not (within [0, MAX_FRAC_BITS]); without calibration every map keeps the profile's."""
    from fo_edge.rules.mano_binding import MAX_FRAC_BITS

    torch.manual_seed(2)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=1, heads=2, patch=2, window=2).eval()
    calib = torch.rand(16, 64)
    profile = load_device("mcu-int8")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    peaks = [0.0] * len(linears)  # the V-cycle's shared maps run once per level: their largest over all calls

    def record(i, a, o):
        peaks[i] = max(peaks[i], float(a[0].abs().max()), float(o.abs().max()))

    hooks = [m.register_forward_hook(lambda mod, a, o, i=i: record(i, a, o)) for i, m in enumerate(linears)]
    with torch.no_grad():
        model(calib)
    for hook in hooks:
        hook.remove()
    dev = DeviceLinears(model, profile, calib)
    assert len(dev.frac_bits) == len(peaks) and len(set(dev.frac_bits)) > 1
    qmax = profile.activation.qmax
    for f, peak in zip(dev.frac_bits, peaks):
        assert 0 <= f <= MAX_FRAC_BITS
        assert peak * 2 ** f <= qmax and (f == MAX_FRAC_BITS or peak * 2 ** (f + 1) > qmax)
    assert DeviceLinears(model, profile).frac_bits == [profile.activation.frac_bits] * len(peaks)


def _integer_linear(x: np.ndarray, net, profile) -> np.ndarray:
    """An independent integer reference of one linear map on the device: the input rounded to the activation
    format (nearest-even, saturating), the device's weight mantissas, exact sums in float64, each output row
    divided by its scale (w_one, times 2**row_shift per channel) with nearest-even rounding and saturated, then
    read back as reals."""
    a = profile.activation
    one = float(2 ** a.frac_bits)
    x_q = np.clip(np.rint(x * one), a.qmin, a.qmax)
    scale = net.real_scale(0)[:, 0]
    mant = np.asarray(net.w, dtype=np.float64).reshape(int(net.dims[1]), int(net.dims[0]))
    acc = x_q @ mant.T
    return np.clip(np.rint(acc / scale), a.qmin, a.qmax) / one


@pytest.mark.parametrize("profile_name", ["mcu-int8", "fpga-fixed16"])
@pytest.mark.parametrize("batch", [1, 20])
@pytest.mark.parametrize("calibrated", [False, True])
def test_device_linears_are_bit_exact_against_an_integer_reference(profile_name, batch, calibrated):
    """Every linear map of a MANO model on the device (embedding, q/k/v and output projections, the V-cycle's
    strided and transposed maps, the MLPs, the head) gives exactly the integer reference's outputs, on the small-
    batch paths and on the int8 GEMM (batch 20 puts every map's rows above kernels.int8_gemm.INT8_BATCH), in the
    profile's activation format or in each map's calibrated one."""
    torch.manual_seed(5)
    profile = load_device(profile_name)
    model = MANOClassifier((1, 8, 8), 10, dim=8, depth=1, heads=2, patch=2, window=2).eval()
    x = torch.rand(batch, 64)
    seen = []
    with torch.no_grad(), DeviceLinears(model, profile, torch.rand(16, 64) if calibrated else None) as dev:
        hooks = [m.register_forward_hook(lambda mod, args, out, i=i: seen.append((i, args[0], out)))
                 for i, m in enumerate(dev.linears)]
        model(x)
        for hook in hooks:
            hook.remove()
    assert {i for i, _, _ in seen} == set(range(len(dev.linears)))
    for i, given, out in seen:
        flat = given.double().reshape(-1, given.shape[-1]).numpy()
        want = _integer_linear(flat, dev.nets[i], dev.profiles[i])
        np.testing.assert_array_equal(out.double().reshape(len(flat), -1).numpy(), want.astype(np.float32))
