"""FOTON at depth: the re-orthogonalisation ablation beside PEPITA, FTP and BP on deep tanh MLPs.

    python tools/foton_depth.py --depths 10,20,50 --intervals 1,10,50,200 --steps 300

Each row is a ``fo_edge.simulate`` run on the float PyTorch path: 784-W x (D-1)-10 with tanh, ``--steps``
steps of batch 32 from the same orthogonal init, tested on as many test samples (``limit`` caps both).
FOTON uses T = 0.25 and 5 Björck iterations every ``interval`` steps (the FOTON paper's ablation says deep
nets collapse when re-orthogonalisation is rarer than about every 50 steps); the others use their defaults.
``--refresh-intervals`` adds FOTON rows with Björck every 10 steps and F = W_L ... W_1 recomputed only every
k steps (the paper: accuracy falls as the refresh gets rarer), and ``--others no`` leaves out PEPITA/FTP/BP.
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
    parser.add_argument("--refresh-intervals", default="", help="e.g. 1,10,50,200")
    parser.add_argument("--others", choices=["yes", "no"], default="yes")
    args = parser.parse_args()
    refresh = args.refresh_intervals or "''"
    intervals = args.intervals or "''"
    print(f"command: python tools/foton_depth.py --depths {args.depths} --intervals {intervals} --width "
          f"{args.width} --steps {args.steps} --dataset {args.dataset} --refresh-intervals {refresh} "
          f"--others {args.others}\n")
    print("| depth | rule | Björck every | F refresh every | test accuracy % | seconds |\n|---|---|---|---|---|---|")
    for depth in (int(d) for d in args.depths.split(",")):
        model = f"784-{args.width}x{depth - 1}-10"
        base = {"temperature": 0.25, "bjorck_iters": 5}
        runs = [("foton", {**base, "ortho_every": int(k)}) for k in args.intervals.split(",") if k]
        runs += [("foton", {**base, "ortho_every": 10, "refresh_every": int(k)})
                 for k in args.refresh_intervals.split(",") if k]
        if args.others == "yes":
            runs += [("pepita", {}), ("ftp", {}), ("bp", {})]
        for rule, options in runs:
            interval, refresh = options.get("ortho_every"), options.get("refresh_every", 1 if options else None)
            start = time.perf_counter()
            result = fo_edge.simulate(rule=rule, device="gpu-fp32", model=model, activation="tanh",
                                      dataset=args.dataset, limit=args.steps * 32, rule_options=options,
                                      out=f"{args.out}/{rule}-{depth}-{interval}-{refresh}", on_unhealthy="warn")
            print(f"| {depth} | {rule} | {interval or ''} | {refresh or ''} | {100 * result.accuracy:.2f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
