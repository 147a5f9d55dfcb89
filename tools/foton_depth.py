"""FOTON at depth: the re-orthogonalisation ablation beside PEPITA, FTP and BP on deep tanh MLPs.

    python tools/foton_depth.py --depths 10,20,50 --intervals 1,10,50,200 --steps 300

Each row is a ``fo_edge.simulate`` run on the float PyTorch path: 784-W x (D-1)-10 with tanh, ``--steps``
steps of batch 32 from the same orthogonal init, tested on as many test samples (``limit`` caps both).
FOTON uses T = 0.25 and 5 Björck iterations every ``interval`` steps (the FOTON paper's ablation says deep
nets collapse when re-orthogonalisation is rarer than about every 50 steps); the others use their defaults.
Chance is 10 %.
"""
import argparse
import time

import fo_edge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="10,20,50")
    parser.add_argument("--intervals", default="1,10,50,200")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", default="runs/foton-depth")
    args = parser.parse_args()
    print(f"command: python tools/foton_depth.py --depths {args.depths} --intervals {args.intervals} --width "
          f"{args.width} --steps {args.steps} --dataset {args.dataset}\n")
    print("| depth | rule | Björck every | test accuracy % | seconds |\n|---|---|---|---|---|")
    for depth in (int(d) for d in args.depths.split(",")):
        model = f"784-{args.width}x{depth - 1}-10"
        runs = [("foton", int(k), {"temperature": 0.25, "bjorck_iters": 5, "ortho_every": int(k)})
                for k in args.intervals.split(",")]
        runs += [("pepita", None, {}), ("ftp", None, {}), ("bp", None, {})]
        for rule, interval, options in runs:
            start = time.perf_counter()
            result = fo_edge.simulate(rule=rule, device="gpu-fp32", model=model, activation="tanh",
                                      dataset=args.dataset, limit=args.steps * 32, rule_options=options,
                                      out=f"{args.out}/{rule}-{depth}-{interval}", on_unhealthy="warn")
            print(f"| {depth} | {rule} | {interval or ''} | {100 * result.accuracy:.2f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
