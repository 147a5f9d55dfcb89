"""Where one Numba mcu-int8 training step's time goes: the whole step, then its kernels called one by one.

    python tools/profile_int8_step.py --batch 128 [--rule ftp] [--model 784-256-256-10] [--blas-threads 1]

Prints milliseconds per call (mean over ``--repeats`` calls after one warm-up call) for: the whole streaming
step as training runs it (``run_step`` on successive MNIST batches, input quantisation included), the input
quantisation, the clean forward through every layer (the float32 copy of W converted once, as a step does),
each layer's weight update on a fixed integer error, and the dynamic per-channel rescale. The kernels run on
every core (``engine.threads.kernel_threads``); ``--blas-threads`` above 1 lets OpenBLAS run its own threads
beside them, to show what their busy-wait costs. The parts overlap with the step only roughly (the step also
runs the target pass, projections and output error): read them as a breakdown, not a sum.
"""
import argparse
import itertools
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fo_edge.accounting.memory import MemoryArena
from fo_edge.data import load_dataset
from fo_edge.device import load_device
from fo_edge.engine.threads import kernel_threads
from fo_edge.kernels.counters import UPDATE, new_counters
from fo_edge.kernels.linear import cached_layer_forward_, layer_rows
from fo_edge.kernels.rng import new_state
from fo_edge.kernels.steps import layer_cache
from fo_edge.kernels.update import int8_outer_update_
from fo_edge.models import init_weights, parse_model_spec
from fo_edge.rules import RULES, rule_config
from fo_edge.rules.numba_binding import (allocate_buffers, fill_fixed_projection, make_params, quantize_input,
                                         rescale_rows, run_step, to_device, update_scales)


def per_call_ms(call, repeats: int) -> float:
    """Mean milliseconds of ``call()`` over ``repeats`` calls, after one warm-up call."""
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return 1e3 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rule", default="ftp", choices=["ftp", "pepita", "foton"])
    parser.add_argument("--model", default="784-256-256-10")
    parser.add_argument("--device", default="mcu-int8")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args()
    with kernel_threads(None) as threads, threadpool_limits(args.blas_threads, user_api="blas"):
        print(f"command: python tools/profile_int8_step.py --batch {args.batch} --rule {args.rule} --model "
              f"{args.model} --device {args.device} --blas-threads {args.blas_threads}  (kernel threads: {threads})")
        for name, ms in profile(args):
            print(f"{name:<44} {ms:8.3f} ms")


def profile(args):
    """(part, ms per call) pairs; see the module docstring."""
    data = load_dataset("mnist")
    dims = parse_model_spec(args.model)
    profile_ = load_device(args.device)
    net = to_device(init_weights(dims, seed=0), profile_)
    batch = args.batch
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile_, net.dims, batch, args.rule, "stream", ortho=False)
    fill_fixed_projection(bufs, profile_, args.rule, net.dims, rule_config(args.rule))
    params = make_params(profile_, RULES[args.rule].default_activation, "ce")
    counters, rng = new_counters(net.n_layers), new_state(0)
    eye = np.eye(int(dims[-1]))
    batches = [(np.ascontiguousarray(data.x_train[s:s + batch]), eye[data.y_train[s:s + batch]])
               for s in range(0, min(len(data.x_train) - batch + 1, 200 * batch), batch)]
    order = itertools.cycle(batches)
    lr = RULES[args.rule].default_lr

    def step():
        x, t = next(order)
        run_step(args.rule, net, bufs, profile_, params, quantize_input(x, profile_, bufs.x, counters[0, -1], rng),
                 t, lr, "stream", counters, rng)

    yield "whole step (quantise + run_step)", per_call_ms(step, args.repeats)
    x_dev = quantize_input(batches[0][0], profile_, bufs.x, counters[0, -1], rng)
    yield "input quantisation", per_call_ms(lambda: quantize_input(batches[0][0], profile_, bufs.x,
                                                                   counters[0, -1], rng), args.repeats)
    outs = [x_dev]

    def forward():
        bufs.cache[2][:] = False  # W changed: convert every layer once, as a step does
        src = x_dev
        outs[1:] = []
        for l in range(net.n_layers):
            d_in, d_out = int(dims[l]), int(dims[l + 1])
            pre = np.empty((batch, d_out), dtype=bufs.pre.dtype)
            h = np.empty((batch, d_out), dtype=bufs.pre.dtype)
            cached_layer_forward_(src, net.w, net.offs[l], d_out, d_in, net.w_one[l], layer_rows(net.row_shift,
                                  net.dims, l), l == net.n_layers - 1, params, pre, h, counters[0, l], rng,
                                  *layer_cache(bufs.cache, net.dims, net.offs, l))
            outs.append(h)
            src = h

    yield "clean forward, every layer (with conversions)", per_call_ms(forward, args.repeats)
    mul, div, g_scale = update_scales(net, profile_, args.rule, lr, batch)
    errors = np.random.default_rng(0)
    saved = net.w.copy()
    for l in range(net.n_layers):
        d_in, d_out = int(dims[l]), int(dims[l + 1])
        delta = errors.integers(-20, 20, size=(batch, d_out)).astype(bufs.pre.dtype)
        rows = layer_rows(net.row_shift, net.dims, l)
        yield f"update of layer {l} ({d_out} x {d_in})", per_call_ms(
            lambda: int8_outer_update_(net.w, net.offs[l], d_out, d_in, delta, outs[l], mul[l], div[l], g_scale[l],
                                  rows, params, counters[UPDATE, l], rng, np.zeros(0)), args.repeats)
        net.w[:] = saved
    yield "dynamic per-channel rescale, every layer", per_call_ms(lambda: rescale_rows(net, params, counters),
                                                                  args.repeats)


if __name__ == "__main__":
    main()
