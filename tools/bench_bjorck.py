"""FOTON's Björck at the reference settings: 20 fixed iterations against a tolerance stop, side by side.

    python tools/bench_bjorck.py --epochs 3 --tol 1e-5

Two measurements, both on the float PyTorch path with the foton-mnist-mlp recipe (784-256-256-10 ReLU,
batch 256, lr 0.5, Björck and F every step, standardised MNIST, dropout 0.1):
  1. the time of one training step (FOTON update + Björck on every layer), the two settings interleaved over the
     same consecutive MNIST batches, after a warm-up; and of Björck alone on the weights one step left behind;
  2. test accuracy after ``--epochs`` epochs of each setting (same seed, data order and dropout masks), and
     the mean iterations the tolerance stop ran.
Prints a Markdown table with the CPU model; only the ratio measured in one run means anything.
"""
import argparse
import time

import numpy as np
import torch

import fo_edge
from fo_edge.data import load_dataset
from fo_edge.engine.torch_loop import dropout_masks
from fo_edge.models import init_weights
from fo_edge.recipe import recipe_settings
from fo_edge.rules import RULES, bjorck_torch, projection_torch, rule_config
from timing import cpu_model




def _step_times(tol: float, steps: int) -> tuple[float, float, float]:
    """(seconds per step, seconds per Björck of all layers, mean iterations) over ``steps`` consecutive batches."""
    data = load_dataset("mnist").standardized()
    ws = [torch.as_tensor(w) for w in init_weights((784, 256, 256, 10), seed=0)]
    eye = torch.eye(10)
    config = rule_config("foton", ortho_every=1, bjorck_iters=20, bjorck_tol=tol)
    step_s, bjorck_s, used = 0.0, 0.0, []
    for step in range(steps + 1):
        idx = slice(256 * step, 256 * (step + 1))
        x, t = torch.as_tensor(data.x_train[idx]), eye[torch.as_tensor(data.y_train[idx])]
        start = time.perf_counter()
        config = config.__class__(**{**config.__dict__, "projection": projection_torch(ws)})
        masks = dropout_masks((784, 256, 256, 10), 256, 0.1, 0, step, "cpu")
        grads = RULES["foton"].update_torch(ws, x, t, activation="relu", error="ce", config=config, masks=masks)
        ws = [w - 0.5 * g for w, g in zip(ws, grads)]
        middle = time.perf_counter()
        ws = [bjorck_torch(w, 20, tol=tol, used=used if step else None) for w in ws]
        end = time.perf_counter()
        if step:  # step 0 is the warm-up
            step_s += end - start
            bjorck_s += end - middle
    return step_s / steps, bjorck_s / steps, float(np.mean(used))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = parser.parse_args()
    timings = {0.0: [], args.tol: []}
    for _ in range(args.rounds):
        for tol in timings:
            timings[tol].append(_step_times(tol, args.steps))
    accuracy = {}
    for tol in timings:
        result = fo_edge.simulate(fo_edge.SimulateConfig(**recipe_settings(
            "foton-mnist-mlp", epochs=args.epochs, out=f"runs/bench-bjorck/tol-{tol:g}", checkpoint_every=0,
            rule_options={"bjorck_tol": tol}, lr_milestones=())))
        accuracy[tol] = [100 * h["test_accuracy"] for h in result.history]
        accuracy[tol].append(np.mean([h.get("bjorck_iters_mean", 20.0) for h in result.history]))
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"command: python tools/bench_bjorck.py --epochs {args.epochs} --tol {args.tol:g} --steps {args.steps} "
          f"--rounds {args.rounds}\n")
    print("| Björck | step ms (best of rounds) | Björck ms | iterations per layer | "
          + " | ".join(f"test % epoch {e + 1}" for e in range(args.epochs)) + " | iterations in training |")
    print("|---|---|---|---|" + "---|" * args.epochs + "---|")
    for tol, runs in timings.items():
        best = min(runs, key=lambda r: r[0])
        label = "20 fixed iterations" if tol == 0 else f"tolerance {tol:g} (at most 20)"
        print(f"| {label} | {1e3 * best[0]:.1f} | {1e3 * best[1]:.1f} | {best[2]:.1f} | "
              + " | ".join(f"{a:.2f}" for a in accuracy[tol][:-1]) + f" | {accuracy[tol][-1]:.1f} |")
    fixed, stopped = min(timings[0.0])[0], min(timings[args.tol])[0]
    print(f"\nstep speed-up with the tolerance stop: {fixed / stopped:.2f}x")


if __name__ == "__main__":
    main()
