"""The layer-major spiking pass (kernels.spiking.spiking_pass_) against the chip's own order, written out plainly
here: every layer advances one timestep at a time, each spike read as one fan-out row (kernels.lif's
dense_events_). Hypothesis draws nets, weights (with zeros, so the event counts differ from the spike counts),
input codes, delays, weight exponents, injections and the input integral; every buffer and counter must be equal
bit for bit, on one thread and on two."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from fo_edge.engine.threads import kernel_threads
from fo_edge.kernels.counters import NEURON_ACTIVE, TIMESTEPS, new_counters
from fo_edge.kernels.lif import dense_events_, lif_int_step_
from fo_edge.kernels.spiking import INPUT_CODES, input_spike_, spiking_pass_


@njit
def timestep_major_pass_(x_q, steps, code, w, dims, offs, wexp, vth_eff, du, dv, delay, inject, phase_buf, spk, u,
                         v, pending, a_buf, counts, in_counts, out_acc, in_acc, nnz, C, phase):
    """The chip's order: per sample and timestep, the input spikes, then each layer's events, delay, neurons."""
    batch = x_q.shape[0]
    n_layers = dims.size - 1
    d0 = dims[0]
    noff = np.zeros(n_layers + 1, dtype=np.int64)
    coff = np.zeros(n_layers + 1, dtype=np.int64)
    hoff = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        noff[l + 1] = noff[l] + batch * dims[l + 1]
        coff[l + 1] = coff[l] + dims[l]
        hoff[l + 1] = hoff[l] + (dims[l + 1] if l < n_layers - 1 else 0)
    wts = np.empty(offs[n_layers], dtype=np.int32)
    for l in range(n_layers):
        d_in, d_out = dims[l], dims[l + 1]
        wts[offs[l]:offs[l + 1]] = np.ascontiguousarray(
            w[offs[l]:offs[l] + d_out * d_in].reshape((d_out, d_in)).T).reshape(-1)
    s_in = np.zeros((1, d0), dtype=np.int64)
    acc = np.zeros(dims[1:].max(), dtype=np.int32)
    integrate = in_acc.shape[0] > 0
    for b in range(batch):
        phase_buf[b, :] = 0
        counts[b, :] = 0
        if integrate:
            in_acc[b, :] = 0
        in_counts[b, :] = 0
        out_acc[b, :] = 0
        for l in range(n_layers):
            lo = noff[l] + b * dims[l + 1]
            spk[lo:lo + dims[l + 1]] = 0
            u[lo:lo + dims[l + 1]] = 0
            v[lo:lo + dims[l + 1]] = 0
            pending[lo:lo + dims[l + 1]] = 0
        for t in range(steps):
            for j in range(d0):
                fired, ph = input_spike_(code, x_q[b, j], phase_buf[b, j], t, steps)
                phase_buf[b, j] = ph
                s_in[0, j] = fired
                in_counts[b, j] += fired
            src = s_in
            for l in range(n_layers):
                d_out = dims[l + 1]
                row = C[phase, l]
                lo = noff[l] + b * d_out
                arrive = a_buf[lo:lo + d_out].reshape((1, d_out))
                wt = wts[offs[l]:offs[l + 1]].reshape((dims[l], d_out))
                dense_events_(src, wt, wexp[l], nnz[coff[l]:coff[l + 1]], acc, arrive, row)
                if delay > 0:
                    for i in range(d_out):
                        a_old = pending[lo + i]
                        pending[lo + i] = arrive[0, i]
                        arrive[0, i] = a_old
                if l == 0 and inject.shape[0] > 0:
                    for i in range(d_out):
                        arrive[0, i] += inject[b, i]
                if l < n_layers - 1:
                    s_out = spk[lo:lo + d_out]
                    lif_int_step_(u[lo:lo + d_out], v[lo:lo + d_out], arrive[0], du, dv, vth_eff[l], 0, s_out, row)
                    for i in range(d_out):
                        counts[b, hoff[l] + i] += s_out[i]
                    if integrate:
                        for i in range(d_out):
                            in_acc[b, hoff[l] + i] += arrive[0, i]
                    src = s_out.reshape((1, d_out))
                else:
                    for i in range(d_out):
                        out_acc[b, i] += arrive[0, i]
                    row[NEURON_ACTIVE] += d_out
    C[phase, n_layers, TIMESTEPS] += steps * batch


def _buffers(dims, batch, integrate):
    neurons = batch * sum(dims[1:])
    hidden = max(sum(dims[1:-1]), 1)
    i64 = np.int64
    return dict(phase_buf=np.zeros((batch, dims[0]), i64), spk=np.zeros(neurons, i64), u=np.zeros(neurons, i64),
                v=np.zeros(neurons, i64), pending=np.zeros(neurons, i64), a_buf=np.zeros(neurons, i64),
                counts=np.zeros((batch, hidden), i64), in_counts=np.zeros((batch, dims[0]), i64),
                out_acc=np.zeros((batch, dims[-1]), i64),
                in_acc=np.zeros((batch, hidden) if integrate else (0, 0), i64))


@st.composite
def spiking_cases(draw):
    depth = draw(st.integers(1, 3))
    dims = [draw(st.integers(1, 24)) for _ in range(depth + 1)]
    batch = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = [dims[l] * dims[l + 1] for l in range(depth)]
    scale = draw(st.sampled_from([8, 64, 256, 32767]))
    w = rng.integers(-scale, scale + 1, size=sum(sizes)).astype(np.int16)
    w[rng.random(w.size) < draw(st.sampled_from([0.0, 0.3]))] = 0  # zero synapses: no events
    x_q = rng.integers(0, 257, size=(batch, dims[0])).astype(np.int64)
    x_q[rng.random(x_q.shape) < 0.3] = 0
    inject = (rng.integers(-2000, 2000, size=(batch, dims[1])).astype(np.int64) if draw(st.booleans())
              else np.zeros((0, 0), np.int64))
    return dict(dims=np.array(dims, np.int64), batch=batch, w=w, x_q=x_q, inject=inject,
                offs=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                steps=draw(st.integers(1, 20)), code=draw(st.sampled_from(sorted(INPUT_CODES.values()))),
                wexp=np.array([draw(st.integers(-3, 3)) for _ in range(depth)], np.int64),
                vth_eff=np.array([draw(st.integers(1, 3000)) << 6 for _ in range(depth)], np.int64),
                du=draw(st.integers(0, 4095)), dv=draw(st.integers(0, 4095)), delay=draw(st.sampled_from([0, 1])),
                integrate=draw(st.booleans()), threads=draw(st.sampled_from([1, 2])))


def _run(kernel, case, with_nnz):
    dims, batch = case["dims"], case["batch"]
    bufs = _buffers(list(dims), batch, case["integrate"])
    C = new_counters(dims.size - 1)
    args = [case["x_q"], case["steps"], case["code"], case["w"], dims, case["offs"], case["wexp"], case["vth_eff"],
            case["du"], case["dv"], case["delay"], case["inject"], bufs["phase_buf"], bufs["spk"], bufs["u"],
            bufs["v"], bufs["pending"], bufs["a_buf"], bufs["counts"], bufs["in_counts"], bufs["out_acc"],
            bufs["in_acc"]]
    if with_nnz:
        nnz = np.concatenate([(case["w"][case["offs"][l]:case["offs"][l + 1]].reshape(dims[l + 1], dims[l]) != 0)
                              .sum(axis=0) for l in range(dims.size - 1)]).astype(np.int64)
        args.append(nnz)
    kernel(*args, C, 1)
    return bufs, C


@settings(max_examples=80, deadline=None)
@given(spiking_cases())
def test_layer_major_pass_equals_the_chips_timestep_order(case):
    ref, C_ref = _run(timestep_major_pass_, case, with_nnz=True)
    with kernel_threads(case["threads"]):
        got, C_got = _run(spiking_pass_, case, with_nnz=False)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    np.testing.assert_array_equal(C_got, C_ref)
    assert C_ref[0].sum() == 0 and C_ref[1].sum() > 0  # only the named phase's rows move

