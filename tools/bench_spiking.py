"""Accuracy and cost of forward-only rules on the spiking loihi-like device (bit-accurate CUBA-LIF, rate coded).

    python tools/bench_spiking.py --model 784-500-10 --epochs 1

One ``fo_edge.simulate`` run per rule on MNIST through the Numba path, with each rule's spiking default
learning rate (rules.spiking_binding.SPIKING_DEFAULT_LR; FOTON with T 0.25 and Björck every 10 steps, 5
iterations), batch 32 and the profile's T timesteps per presentation. Prints a Markdown table: test accuracy,
dynamic and static energy per training sample, estimated device time and cores, simulator wall time.
"""
import argparse
import time

import fo_edge
from fo_edge.accounting.energy import format_energy

FOTON = {"temperature": 0.25, "bjorck_iters": 5, "ortho_every": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="784-500-10")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rules", default="ftp,foton,pepita")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="runs/bench-spiking")
    args = parser.parse_args()
    print(f"command: python tools/bench_spiking.py --model {args.model} --epochs {args.epochs} --rules {args.rules}"
          + (f" --limit {args.limit}" if args.limit else "") + "\n")
    print("| rule | lr | test accuracy % | dynamic E / training sample | static E / training sample | device time "
          "(training) | cores | wall s |\n|---|---|---|---|---|---|---|---|")
    for rule in args.rules.split(","):
        start = time.perf_counter()
        result = fo_edge.simulate(rule=rule, device="loihi-like", model=args.model, epochs=args.epochs,
                                  limit=args.limit, rule_options=FOTON if rule == "foton" else {},
                                  out=f"{args.out}/{rule}", on_unhealthy="warn")
        energy = result.record["energy"]
        static = energy["static"]
        print(f"| {rule} | {result.record['config']['lr']} | {100 * result.accuracy:.2f} | "
              f"{format_energy(energy['modes']['op']['per_training_sample_pj'])} | "
              f"{format_energy(static['per_training_sample_pj'])} | {static['training_s']:.2f} s | "
              f"{static['cores_used']} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
