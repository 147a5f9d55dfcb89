"""Training-step throughput (samples/s) of one rule: PyTorch fp32 path vs Numba fp32 vs Numba mcu-int8.

    python tools/bench_kernels.py --rule ftp --model 784-256-256-10 --batches 1,8,32,128

Each cell times ``--seconds`` worth of steps after a warm-up step (JIT compilation excluded), in ``--rounds``
rounds that visit the four cells of a batch size in turn; a cell's figure is its fastest round (see
``timing.timed_together``: the cells run under the same load, and a round another tenant slowed is dropped).
Each step runs on the next batch of the MNIST training set, as training runs them (repeating one batch would
let the integer kernels skip the zero errors of a memorised batch). The torch path is the rule's update plus
``W -= lr g`` in float32 on the CPU with torch's default threads; the Numba paths are the streaming fused step
(``run_step``) including the input quantisation: the kernels run on every core (``--threads``), their BLAS
calls single-threaded inside their parallel loops; from ``kernels.int8_gemm.INT8_BATCH`` samples on the
mcu-int8 step's products go through torch's int8 GEMM on the same threads. Prints a Markdown table with the ratio Numba int8 / PyTorch and
the int8 step with nearest-even update rounding (no random draws: what the draws cost), then the cost of one
stochastic-rounding draw of the run's serial xorshift64* stream (the updates' stochastic rounding draws
counter-based values instead, kernels.rng.counter_u53; the stream gives each update its key).
"""
import argparse
import itertools
import time

import numpy as np
import torch
from numba import njit

from fo_edge.accounting.memory import MemoryArena
from fo_edge.data import load_dataset
from fo_edge.device import load_device
from fo_edge.engine.threads import kernel_threads
from fo_edge.kernels.counters import new_counters
from fo_edge.kernels.fixed import ROUND_NEAREST_EVEN
from fo_edge.kernels.rng import new_state, next_u53
from fo_edge.models import init_weights, parse_model_spec
from fo_edge.rules import RULES, rule_config
from fo_edge.rules.numba_binding import (allocate_buffers, fill_fixed_projection, make_params, quantize_input,
                                         run_step, to_device)
from timing import cpu_model, timed_together


#: distinct batches each cell cycles through (more than a cell's steps at ``--seconds 2``; bounds the memory)
MAX_BATCHES = 8192


def torch_step(rule, weights, batches, lr, activation):
    """A call that runs one training step on the next of ``batches`` ((x, t) pairs) on the torch path."""
    spec, config = RULES[rule], rule_config(rule)
    ws = [torch.tensor(w) for w in weights]
    tensors = [(torch.tensor(x), torch.tensor(t, dtype=torch.float32)) for x, t in batches]
    order = itertools.cycle(tensors)

    def step():
        xt, tt = next(order)
        grads = spec.update_torch(ws, xt, tt, activation=activation, error="ce", config=config)
        for w, g in zip(ws, grads):
            w.sub_(lr * g)
    return step


def numba_step(rule, device, weights, batches, lr, activation, draws=True):
    """A call that runs one streaming fused step on the next of ``batches`` on the Numba path of ``device``;
    ``draws=False`` rounds the updates to nearest-even instead of stochastically (no random draws)."""
    profile = load_device(device)
    config = rule_config(rule)
    net = to_device(weights, profile)
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, len(batches[0][0]), rule, "stream",
                            ortho=False)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    params = make_params(profile, activation, "ce")
    if not draws:
        params = params._replace(upd_round=ROUND_NEAREST_EVEN)
    counters, rng = new_counters(net.n_layers), new_state(0)
    order = itertools.cycle(batches)

    def step():
        x, t = next(order)
        x_dev = quantize_input(x, profile, bufs.x, counters[0, -1], rng)
        run_step(rule, net, bufs, profile, params, x_dev, t, lr, "stream", counters, rng)
    return step


@njit(cache=True)
def _draws(state, n):
    folded = 0
    for _ in range(n):
        folded ^= next_u53(state)
    return folded


def draw_ns(n: int = 4_000_000) -> float:
    """Nanoseconds per draw of the kernels' generator, drawn back to back (best of 5)."""
    state = new_state(0)
    _draws(state, 10)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        _draws(state, n)
        best = min(best, time.perf_counter() - start)
    return 1e9 * best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", default="ftp", choices=["ftp", "pepita", "foton", "bp"])
    parser.add_argument("--model", default="784-256-256-10")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per cell (spread over the rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per batch size: the four cells run in turn "
                        "for seconds / rounds each, and each cell's figure is its fastest round")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and the kernels "
                        "(default: every available core)")
    args = parser.parse_args()
    with kernel_threads(args.threads) as threads:
        torch.set_num_threads(threads)
        table(args)


def table(args) -> None:
    """Time every cell and print the table."""
    data = load_dataset("mnist")
    dims = parse_model_spec(args.model)
    weights = init_weights(dims, seed=0)
    activation, lr = RULES[args.rule].default_activation, RULES[args.rule].default_lr
    print(f"command: python tools/bench_kernels.py --rule {args.rule} --model {args.model} --batches "
          f"{args.batches} --seconds {args.seconds} --rounds {args.rounds}  (torch threads: "
          f"{torch.get_num_threads()}; CPU: {cpu_model()})\n")
    print("| batch | PyTorch fp32 samples/s | Numba fp32 samples/s | Numba mcu-int8 samples/s | int8 / PyTorch "
          "| mcu-int8 without draws samples/s |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        starts = range(0, min(len(data.x_train) - batch + 1, MAX_BATCHES * batch), batch)
        batches = [(np.ascontiguousarray(data.x_train[s:s + batch]), np.eye(dims[-1])[data.y_train[s:s + batch]])
                   for s in starts]
        seconds = timed_together([torch_step(args.rule, weights, batches, lr, activation),
                                  numba_step(args.rule, "gpu-fp32", weights, batches, lr, activation),
                                  numba_step(args.rule, "mcu-int8", weights, batches, lr, activation),
                                  numba_step(args.rule, "mcu-int8", weights, batches, lr, activation, draws=False)],
                                 args.seconds, args.rounds)
        rates = [batch / s for s in seconds]
        print(f"| {batch} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[2]:.0f} | {rates[2] / rates[0]:.2f}x "
              f"| {rates[3]:.0f} |", flush=True)
    print(f"\none stochastic-rounding draw: {draw_ns():.2f} ns")


if __name__ == "__main__":
    main()
