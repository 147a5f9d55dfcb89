"""MNIST accuracy of a rule on an integer device beside its fp32 self (same seed, model, epochs, data order).

    python tools/bench_device_accuracy.py --rules ftp,foton --device mcu-int8 --epochs 1
    python tools/bench_device_accuracy.py --rules foton --batch-size 16 --seeds 0,1,2 \
        --device mcu-int8,tools/profiles/mcu-int8-per-layer.toml

``--device`` takes profile ids or paths (tools/profiles holds the int8 variants); every device of a seed is
compared with that seed's one fp32 run. Both columns are Numba-path runs of ``fo_edge.simulate`` (fp32 = the ``gpu-fp32`` profile), so the only
difference is the arithmetic. Updates on the integer device use stochastic rounding (the profile's
``update_rounding``). The default model, 784-128-128-10, fits the MCU's 256 KB with its step buffers
(784-256-256-10 needs 262.5 KiB for its int8 weights alone). With lr / B of about 1e-3 nearly every
per-weight step is below one weight LSB (2**-8 .. 2**-10 of the layer's range), so nearest rounding would drop
them all, while stochastic rounding keeps them unbiased in expectation (Gupta et al. 2015); the ``updates
lost`` column counts those that still rounded to zero. FOTON uses the bench_accuracy.py options (T = 0.25, Björck every 10 steps, 5 iterations).
"""
import argparse
from pathlib import Path

import fo_edge
from fo_edge.errors import DeviceMemoryError

OPTIONS = {"foton": {"temperature": 0.25, "ortho_every": 10, "bjorck_iters": 5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", default="ftp,foton")
    parser.add_argument("--device", default="mcu-int8", help="comma-separated profile ids or paths: each seed's "
                        "fp32 run is shared by all of them")
    parser.add_argument("--model", default="784-128-128-10")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (init, data order, rounding draws); "
                        "with more than one, a last row per device gives the differences' mean and range")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    devices = args.device.split(",")
    print(f"command: python tools/bench_device_accuracy.py --rules {args.rules} --device {args.device} --model "
          f"{args.model} --epochs {args.epochs} --batch-size {args.batch_size} --seeds {args.seeds}\n")
    print("| rule | device | seed | fp32 % | device % | difference pp | updates lost | saturation events |")
    print("|---|---|---|---|---|---|---|---|")
    for rule in args.rules.split(","):
        differences = {device: [] for device in devices}
        for seed in seeds:
            fp32 = 100 * run(rule, "gpu-fp32", seed, args).accuracy
            for device in devices:
                try:
                    result = run(rule, device, seed, args)
                except DeviceMemoryError as exc:
                    print(f"| {rule} | {Path(device).stem} | {seed} | | does not fit: "
                          f"{str(exc).split('[')[0].strip()} | | | |", flush=True)
                    continue
                totals = result.record["counters"]["totals"]
                lost = totals["updates_lost"] / max(totals["updates_lost"] + totals["weight_writes"], 1)
                differences[device].append(100 * result.accuracy - fp32)
                print(f"| {rule} | {Path(device).stem} | {seed} | {fp32:.2f} | {100 * result.accuracy:.2f} | "
                      f"{differences[device][-1]:+.2f} | {100 * lost:.0f} % of nonzero | "
                      f"{totals['saturation_events']} |", flush=True)
        for device, diffs in differences.items():
            if len(diffs) > 1:
                print(f"| {rule} | {Path(device).stem} | mean of {len(diffs)} | | | {sum(diffs) / len(diffs):+.2f} "
                      f"({min(diffs):+.2f} .. {max(diffs):+.2f}) | | |", flush=True)


def run(rule: str, device: str, seed: int, args):
    """One Numba-path run of ``rule`` on ``device`` (a profile id or path) with the table's settings."""
    return fo_edge.simulate(rule=rule, device=device, model=args.model, epochs=args.epochs,
                            batch_size=args.batch_size, backend="numba", seed=seed,
                            out=f"runs/bench-device-accuracy/{rule}-{Path(device).stem}-seed{seed}",
                            rule_options=OPTIONS.get(rule, {}), overwrite=True)


if __name__ == "__main__":
    main()
