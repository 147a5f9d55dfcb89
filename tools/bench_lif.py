"""Spiking simulation throughput: the Numba bit-accurate Loihi net vs the snnTorch reference, in
sample-timesteps per second, for one forward presentation (the unit every training pass is made of).

    python tools/bench_lif.py --model 784-500-10 --timesteps 32 --batch 64

Both run the same rate-coded MLP on the same real MNIST batch (kernels.spiking with the loihi-like profile's
neurons, samples in parallel on ``--threads`` Numba threads; models.spiking with snnTorch Leaky layers,
float32 on the CPU with as many torch threads), after a warm-up call (JIT compilation excluded), each timed
over ``--seconds``. Prints a Markdown table with the
ratio and the two paths' test-batch agreement (the fraction of samples with the same predicted class), and the
Numba path on an all-zero batch (no input spikes, so no synaptic events: what the neuron and bookkeeping
loops cost alone).
"""
import argparse
import dataclasses

import numpy as np
import torch

from fo_edge.accounting.memory import MemoryArena
from fo_edge.data import load_dataset
from fo_edge.device import load_device
from fo_edge.engine.threads import kernel_threads
from fo_edge.kernels.counters import FORWARD, new_counters
from fo_edge.models import init_weights, parse_model_spec
from fo_edge.models.spiking import SpikingMLP
from fo_edge.rules.numba_binding import from_device, to_device
from fo_edge.rules.spiking_binding import allocate_spiking, spiking_forward
from timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="784-500-10")
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and the kernels "
                        "(default: every available core)")
    args = parser.parse_args()
    with kernel_threads(args.threads) as threads:
        torch.set_num_threads(threads)
        table(args, threads)


def table(args, threads: int) -> None:
    """Time both paths and print the table."""
    base = load_device("loihi-like")
    profile = dataclasses.replace(base, spiking=dataclasses.replace(base.spiking, timesteps=args.timesteps))
    dims = parse_model_spec(args.model)
    data = load_dataset("mnist")
    x = data.x_train[:args.batch].astype(np.float64)
    weights = init_weights(dims, seed=0)
    arena = MemoryArena(profile.capacity.sram_bytes)
    net = to_device(weights, profile, arena)
    bufs = allocate_spiking(arena, profile, net.dims, args.batch, "ftp")
    counters = new_counters(len(dims) - 1)
    numba_s = timed(lambda: spiking_forward(net, bufs, profile, x, counters, FORWARD), args.seconds)
    labels_numba = np.argmax(spiking_forward(net, bufs, profile, x, counters, FORWARD), axis=1)
    blank = np.zeros_like(x)
    blank_s = timed(lambda: spiking_forward(net, bufs, profile, blank, counters, FORWARD), args.seconds)
    ws = [torch.tensor(w, dtype=torch.float32) for w in from_device(net)]  # the device's weights, in float
    model = SpikingMLP(ws, profile.spiking)
    xt = torch.tensor(x, dtype=torch.float32)
    torch_s = timed(lambda: model(xt), args.seconds)
    labels_torch = model(xt)[0].argmax(1).numpy()
    rate = args.batch * args.timesteps
    print(f"command: python tools/bench_lif.py --model {args.model} --timesteps {args.timesteps} "
          f"--batch {args.batch} --threads {threads}\n")
    print("| path | sample-timesteps/s | ms per presentation of the batch |\n|---|---|---|")
    print(f"| snnTorch (float32, {threads} torch threads) | {rate / torch_s:,.0f} | {1e3 * torch_s:.1f} |")
    print(f"| Numba bit-accurate Loihi ({threads} threads) | {rate / numba_s:,.0f} | {1e3 * numba_s:.1f} |")
    print(f"| Numba, an all-zero batch (no input spikes) | {rate / blank_s:,.0f} | {1e3 * blank_s:.1f} |")
    print(f"\nNumba / snnTorch: {torch_s / numba_s:.2f}x; same predicted class on "
          f"{100 * np.mean(labels_numba == labels_torch):.1f} % of the batch")


if __name__ == "__main__":
    main()
