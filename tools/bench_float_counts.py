"""What counting costs the float torch path: one training step with and without the meter, side by side.

    python tools/bench_float_counts.py --rounds 5 --steps 40 --batches 32,128

For each rule (784-256-256-10 on real MNIST, tanh, CE, the rules' default options; FOTON with Björck and F every
step) and batch size, the torch path's step (rule update + SGD, as engine.torch_loop runs it) is timed over the
same consecutive batches with ``meter=None`` and with an accounting.float_counts.FloatMeter for gpu-fp32,
alternating the two ``--rounds`` times; the table gives the median seconds per step of each and their ratio.
Only the ratio of one run means anything (the CPU is named).
"""
import argparse
import statistics
import time

import torch

from fo_edge.accounting.float_counts import FloatMeter
from fo_edge.data import load_dataset
from fo_edge.device import load_device
from fo_edge.models import init_weights
from fo_edge.rules import RULES, bjorck_torch, projection_torch, rule_config
from timing import cpu_model

DIMS = (784, 256, 256, 10)




def _steps(rule: str, batch: int, steps: int, metered: bool, x_all, t_all) -> float:
    """Seconds per step over ``steps`` consecutive batches (after one warm-up step)."""
    import dataclasses

    ws = [torch.as_tensor(w).clone() for w in init_weights(DIMS, seed=0)]
    config = rule_config(rule)
    meter = FloatMeter(DIMS, load_device("gpu-fp32"), rule) if metered else None
    spec = RULES[rule]
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        x, t = x_all[step * batch:(step + 1) * batch], t_all[step * batch:(step + 1) * batch]
        if rule == "foton":
            config = dataclasses.replace(config, projection=projection_torch(ws))
            if meter is not None:
                meter.refresh()
        if meter is not None:
            meter.begin_step()
        grads = spec.update_torch(ws, x, t, activation="tanh", error="ce", config=config,
                                  **({"meter": meter} if meter is not None else {}))
        for l, (w, g) in enumerate(zip(ws, grads)):
            if meter is None:
                w.sub_(0.05 * g)
            else:
                ws[l] = w - 0.05 * g
                meter.update(l, batch, w, ws[l], False)
        if rule == "foton":
            new_ws = []
            for l, w in enumerate(ws):
                used, unchanged = [], []
                new = bjorck_torch(w, 20, used=used, unchanged=unchanged)
                if meter is not None:
                    meter.orthogonalize(l, w, new, used[-1], unchanged[-1], 20, 0.0)
                new_ws.append(new)
            ws = new_ws
    if meter is not None:
        meter.counts()  # the read-back a record or checkpoint makes
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--rules", default="ftp,pepita,bp,foton")
    args = parser.parse_args()
    data = load_dataset("mnist")
    x_all = torch.as_tensor(data.x_train)
    t_all = torch.eye(10)[torch.as_tensor(data.y_train)]
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; 784-256-256-10 tanh, "
          f"{args.steps} steps x {args.rounds} alternating rounds, median seconds per step\n")
    print("| rule | batch | without meter (ms) | with meter (ms) | with / without |")
    print("|---|---|---|---|---|")
    for rule in args.rules.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            plain, metered = [], []
            for _ in range(args.rounds):
                plain.append(_steps(rule, batch, args.steps, False, x_all, t_all))
                metered.append(_steps(rule, batch, args.steps, True, x_all, t_all))
            a, b = statistics.median(plain), statistics.median(metered)
            print(f"| {rule} | {batch} | {1e3 * a:.3f} | {1e3 * b:.3f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
