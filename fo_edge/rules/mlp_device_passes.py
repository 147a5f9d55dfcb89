"""The MLP on the Numba device as a family of the forward-only rules (rules.passes): FTP, PEPITA and FOTON run
from their one definitions (rules.ftp.ftp_updates, rules.pepita.pepita_updates, rules.foton.foton_updates) over
the device's own kernels, streaming, in the device's formats.

What each primitive runs (kernels.steps; B the batch, d_l the widths, L weight layers):

    clean(x)               pass 1 (``_pass1_``): h_l kept in the schedule's buffers, y in the scratch buffer;
                           the simulator's copy of pass 1 (``kept``) where recomputing it would repeat it exactly
    error(clean, t)        e = softmax(y / T) - t or y - t in the error format (``output_error_``)
    from_input(x, e, F, s) x + s e F formed by the projection kernel (``project_``) into x_mod
    from_first(clean, ., .) FTP's target pass, formed lazily: its first layer needs h_1 (a_1), which the stream
                           recomputes inside delta(0); the device forms tau_1 from its own e, t and y_hat in its
                           formats (``_difference_target_``, or ``project_`` then sigma), the rule's float signal
                           being the statement of the same term
    delta(l)               layer l of the clean pass recomputed (or charged, where the simulator kept it) beside
                           layer l of the second pass, then the local error (``local_error_``)
    output_error(second)   PEPITA's e_mod: W_L h^mod_{L-1} and its error (into e)
    local_output_error     FTP's y - tau_L (``_local_output_error_``)
    correlate(l, ., h_in)  layer l's update applied at once (``update_``: SGD, or momentum and weight decay; with
                           P.collect the estimate g_l is written to ``g_out`` instead); returns None

The order of the kernel calls, and so of every random draw and every counter, is the fused step's
(``kernels.steps.forward_only_step_``), which compiles the same three rules into one kernel for speed. Tests hold
the two bit for bit (tests/test_rules_once.py); a forward-only rule without a fused kernel runs here.
"""
from __future__ import annotations

import numpy as np

from ..kernels.counters import FORWARD, MODULATED, RECOMPUTE, UPDATE
from ..kernels.fixed import log2_exact
from ..kernels.linear import cached_layer_forward_, layer_rows, project_
from ..kernels.steps import (Params, _difference_target_, _local_output_error_, _pass1_, _reuses_pass1, _view,
                             _y_hat_, activate_rows_, drop_, layer_cache, local_error_, mask_offset, output_error_, update_)
from .passes import Pass

__all__ = ["MLPDevicePasses"]


class MLPDevicePasses:
    """rules.passes.Passes of an MLP on the device: ``net`` (rules.numba_binding.DeviceNet), ``bufs`` (its
    StepBuffers), the kernel parameters P, the step's update scaling (mul, div, g_scale), projection divisor,
    schedule (``store``: keep every clean activation), counters (phases, L + 1, names), RNG, g_out, dropout
    ``drop``, optimiser ``opt``, and FTP's label and y_hat arrays in the error format (``tq``, ``yq``)."""

    def __init__(self, net, bufs, P: Params, scales: tuple, proj_div, store: bool, counters, rng, g_out, drop,
                 opt, tq: np.ndarray, yq: np.ndarray):
        self.net, self.bufs, self.P, self.counters, self.rng = net, bufs, P, counters, rng
        self.mul, self.div, self.g_scale = scales
        self.proj_div, self.store_mode, self.g_out, self.drop, self.opt = proj_div, store, g_out, drop, opt
        self.tq, self.yq = tq, yq
        self.n_layers = net.n_layers
        self.a_shift = log2_exact(P.a_one)
        self.batch, self.reuse, self.t = 0, False, None
        self.e = self.out_err = None

    def _args(self, l: int) -> tuple:
        """Layer l's weights as the layer kernels take them: (w, offset, d_out, d_in, w_one, rows)."""
        net = self.net
        return (net.w, net.offs[l], net.dims[l + 1], net.dims[l], net.w_one[l], layer_rows(net.row_shift, net.dims, l))

    def _cache(self, l: int) -> tuple:
        return layer_cache(self.bufs.cache, self.net.dims, self.net.offs, l)

    def _clean_views(self, batch: int) -> list[np.ndarray]:
        """Where each hidden layer's clean h_{l+1} lives while the second pass reaches layer l+1: the simulator's
        kept copy of pass 1, the store (schedule ``store``), or the two alternating stream buffers."""
        bufs, dims, views, off = self.bufs, self.net.dims, [], 0
        for l in range(self.n_layers - 1):
            d = int(dims[l + 1])
            if self.reuse or self.store_mode:
                flat = bufs.kept[0] if self.reuse else bufs.store
                views.append(flat[off:off + batch * d].reshape((batch, d)))
                off += batch * d
            else:
                views.append(_view(bufs.c0 if l % 2 == 0 else bufs.c1, batch, d))
        return views

    def _second_views(self, batch: int) -> list[np.ndarray]:
        """The second pass's h_{l+1}: the two alternating modulated buffers."""
        bufs, dims = self.bufs, self.net.dims
        return [_view(bufs.m0 if l % 2 == 0 else bufs.m1, batch, int(dims[l + 1])) for l in range(self.n_layers - 1)]

    def clean(self, x_dev: np.ndarray) -> Pass:
        net, bufs, P, C = self.net, self.bufs, self.P, self.counters
        batch = x_dev.shape[0]
        self.batch = batch
        bufs.cache[2][:] = False  # W may have changed since the last step
        kept_h, kept_pre, kept_counts = bufs.kept
        self.reuse = kept_h.size > 0 and bool(_reuses_pass1(P))
        if self.reuse:  # pass 1's counts of this step, charged again to RECOMPUTE where the device recomputes
            kept_counts[:] = C[FORWARD]
        y = _pass1_(net.w, net.dims, net.offs, net.w_one, net.row_shift, x_dev, P, bufs.c0, bufs.c1, bufs.pre,
                    bufs.tmp, kept_h if self.reuse else bufs.store, self.store_mode or self.reuse, C, FORWARD,
                    self.rng, bufs.cache, self.drop, kept_pre if self.reuse else kept_pre[:0])
        if self.reuse:
            kept_counts[:] = C[FORWARD] - kept_counts
        return Pass(y / float(P.a_one), [x_dev, *self._clean_views(batch)], {"y": y})

    def error(self, clean: Pass, t: np.ndarray) -> np.ndarray:
        self.t = t
        self.e = self.out_err = self.bufs.e[:self.batch]
        output_error_(clean.state["y"], t, self.P, self.e, self.counters[FORWARD, self.n_layers])
        return self.e / float(self.P.e_one)

    def charge_projection(self, v, m) -> None:
        """Nothing: the device counts its feedback products in the kernels that form them (from_first)."""

    def from_input(self, x_dev: np.ndarray, e, f, sign: float) -> Pass:
        xm = self.bufs.xm[:self.batch]
        project_(x_dev, self.e, self.bufs.proj, int(sign), self.proj_div, self.P, xm,
                 self.counters[MODULATED, 0], self.rng)
        return Pass(None, [xm, *self._second_views(self.batch)])

    def from_first(self, clean: Pass, signal, pre: bool) -> Pass:
        if self.P.ftp_diff:
            _y_hat_(clean.state["y"], self.e, self.tq, self.P, self.yq)
        return Pass(None, [None, *self._second_views(self.batch)], {"target": True})

    def delta(self, l: int, clean: Pass, second: Pass, local: bool) -> np.ndarray:
        net, bufs, P, C, rng, batch = self.net, self.bufs, self.P, self.counters, self.rng, self.batch
        d_out = int(net.dims[l + 1])
        pre, delta = _view(bufs.pre, batch, d_out), _view(bufs.tmp, batch, d_out)
        c_next, m_next = clean.h[l + 1], second.h[l + 1]
        koff = mask_offset(net.dims, batch, l)
        first_target = l == 0 and "target" in second.state
        if not self.store_mode or first_target:  # the device recomputes h_{l+1} (FTP: also a_1)
            if self.reuse:  # bit-identical to pass 1: charged, not computed
                C[RECOMPUTE, l] += bufs.kept[2][l]
                if first_target:
                    pre.reshape(-1)[:] = bufs.kept[1][:batch * d_out]
            else:
                cached_layer_forward_(clean.h[l], *self._args(l), False, P, pre, c_next, C[RECOMPUTE, l], rng,
                                      *self._cache(l))
                drop_(pre, c_next, self.drop, koff, P, C[RECOMPUTE, l], rng)
        if first_target and P.ftp_diff:
            _difference_target_(c_next, self.tq, self.yq, bufs.proj, self.proj_div, P, pre, delta, m_next,
                                C[MODULATED, 0], rng)
        elif first_target:  # tau_1 = sigma(a_1 - e G^T) (or sigma(a_1 + t G^T)); pre holds a_1
            if P.ftp_label:
                project_(pre, self.tq, bufs.proj, 1, self.proj_div, P, delta, C[MODULATED, 0], rng)
            else:
                project_(pre, self.e, bufs.proj, -1, self.proj_div, P, delta, C[MODULATED, 0], rng)
            activate_rows_(delta, P, m_next)
        else:
            cached_layer_forward_(second.h[l], *self._args(l), False, P, pre, m_next, C[MODULATED, l], rng,
                                  *self._cache(l))
            drop_(pre, m_next, self.drop, koff, P, C[MODULATED, l], rng)
        local_error_(c_next, m_next, self.drop[0], koff, local, P, self.a_shift, delta, C[UPDATE, l])
        return delta

    def output_error(self, second: Pass, t) -> np.ndarray:
        bufs, P, C, last, batch = self.bufs, self.P, self.counters, self.n_layers - 1, self.batch
        d_out = int(self.net.dims[-1])
        y_mod = _view(bufs.tmp, batch, d_out)
        cached_layer_forward_(second.h[-1], *self._args(last), True, P, _view(bufs.pre, batch, d_out), y_mod,
                              C[MODULATED, last], self.rng, *self._cache(last))
        output_error_(y_mod, self.t, P, self.e, C[MODULATED, self.n_layers])  # into e: its clean value is spent
        return self.e / float(P.e_one)

    def local_output_error(self, clean: Pass, second: Pass) -> np.ndarray:
        net, bufs, last = self.net, self.bufs, self.n_layers - 1
        out = bufs.m1 if (last - 1) % 2 == 0 else bufs.m0
        self.out_err = _local_output_error_(net.w, net.dims, net.offs, net.w_one, net.row_shift, clean.h[-1],
                                            second.h[-1], self.P, bufs.pre, bufs.tmp, out, self.counters, self.rng,
                                            bufs.cache)
        return self.out_err / float(self.P.e_one)

    def correlate(self, l: int, delta, h_in: np.ndarray) -> None:
        net, last = self.net, self.n_layers - 1
        if l == last:
            delta = self.out_err
        update_(net.w, net.dims, net.offs, net.row_shift, l, net.dims[l + 1], net.dims[l], delta, h_in, self.mul,
                self.div, self.g_scale, self.P, self.counters[UPDATE, l], self.rng, self.g_out, self.opt, net.rescan)
        self.bufs.cache[2][l] = False
        return None
