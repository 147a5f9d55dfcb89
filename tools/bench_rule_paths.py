"""What the MLP device's fused step buys: samples/s of each forward-only rule's step as one compiled kernel
(``kernels.steps.forward_only_step_``) against the same step run from the rule's one definition over the device's
kernels (``rules.mlp_device_passes``, ``run_step(fused=False)``), which the tests hold bit for bit equal.

    python tools/bench_rule_paths.py --model 784-256-256-10 --batches 1,8,32,128 --devices mcu-int8,gpu-fp32

Both paths of a cell run on the same network, the same MNIST batches in turn, on the same threads
(``timing.timed_together``: interleaved rounds, each figure its fastest round). Prints a Markdown table with the
ratio fused / defined and the CPU it ran on.
"""
import argparse
import itertools

import numpy as np

from fo_edge.accounting.memory import MemoryArena
from fo_edge.data import load_dataset
from fo_edge.device import load_device
from fo_edge.engine.threads import kernel_threads
from fo_edge.kernels.counters import new_counters
from fo_edge.kernels.rng import new_state
from fo_edge.models import init_weights, parse_model_spec
from fo_edge.rules import RULES, rule_config
from fo_edge.rules.numba_binding import (allocate_buffers, fill_fixed_projection, ftp_kernel_options, make_params,
                                         quantize_input, refresh_projection, run_step, to_device)
from timing import cpu_model, timed_together

#: distinct batches each cell cycles through
MAX_BATCHES = 4096


def device_step(rule: str, device: str, weights, batches, fused: bool):
    """A call running one training step of ``rule`` on the next of ``batches`` ((x, one-hot) pairs) on ``device``,
    fused or from the definition (FOTON's F refreshed every step, as its reference schedule does)."""
    profile, config, spec = load_device(device), rule_config(rule), RULES[rule]
    net = to_device(weights, profile)
    bufs = allocate_buffers(MemoryArena(2**40, 2**40), profile, net.dims, len(batches[0][0]), rule, "stream",
                            ortho=False)
    fill_fixed_projection(bufs, profile, rule, net.dims, config)
    params = make_params(profile, spec.default_activation, "ce", **ftp_kernel_options(config))
    counters, rng = new_counters(net.n_layers), new_state(0)
    order = itertools.cycle(batches)

    def step():
        x, t = next(order)
        if rule == "foton":
            refresh_projection(net, bufs, profile, counters, rng)
        x_dev = quantize_input(x, profile, bufs.x, counters[0, -1], rng)
        run_step(rule, net, bufs, profile, params, x_dev, t, spec.default_lr, "stream", counters, rng, config=config,
                 fused=fused)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="784-256-256-10")
    parser.add_argument("--rules", default="ftp,pepita,foton")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--devices", default="mcu-int8,gpu-fp32")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per cell, spread over the rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: every core)")
    args = parser.parse_args()
    data = load_dataset("mnist")
    dims = parse_model_spec(args.model)
    weights = init_weights(dims, seed=0)
    with kernel_threads(args.threads) as threads:
        print(f"command: python tools/bench_rule_paths.py --model {args.model} --rules {args.rules} --batches "
              f"{args.batches} --devices {args.devices} --seconds {args.seconds} --rounds {args.rounds}  "
              f"(kernel threads: {threads}; CPU: {cpu_model()})\n")
        print("| rule | device | batch | fused samples/s | from the definition samples/s | fused / defined |")
        print("|---|---|---|---|---|---|")
        for rule, device, batch in itertools.product(args.rules.split(","), args.devices.split(","),
                                                     (int(b) for b in args.batches.split(","))):
            starts = range(0, min(len(data.x_train) - batch + 1, MAX_BATCHES * batch), batch)
            batches = [(np.ascontiguousarray(data.x_train[s:s + batch]), np.eye(dims[-1])[data.y_train[s:s + batch]])
                       for s in starts]
            seconds = timed_together([device_step(rule, device, weights, batches, True),
                                      device_step(rule, device, weights, batches, False)], args.seconds, args.rounds)
            fused, defined = (batch / s for s in seconds)
            print(f"| {rule} | {device} | {batch} | {fused:.0f} | {defined:.0f} | {fused / defined:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
