"""Accuracy of each rule on full MNIST (float PyTorch path) beside the papers' numbers; prints Markdown.

    python tools/bench_accuracy.py --epochs 3

Models: 784-1024-10 and a 3-hidden-layer MLP 784-256x3-10; defaults per rule (lr, activation) from the
registry. FOTON uses a softmax temperature of 0.25 (orthogonal weights bound the logits) and re-orthogonalises
every 10 steps with 5 Björck iterations (the reference: every step, 20 iterations; too slow on 2 cores).
"""
import argparse
import sys
import time

import fo_edge

PAPER = {"foton": "98.5 (3-layer MLP)", "pepita": "97.9 (784-1024-10, 100 epochs)", "bp": "98.5 (FOTON paper)",
         "ftp": "competitive with BP (no number for this MLP)"}
OPTIONS = {"foton": {"temperature": 0.25, "ortho_every": 10, "bjorck_iters": 5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rules", default="bp,pepita,foton,ftp")
    parser.add_argument("--models", default="784-1024-10,784-256x3-10")
    args = parser.parse_args()
    print(f"command: python tools/bench_accuracy.py --epochs {args.epochs} --batch-size {args.batch_size}")
    print("\n| rule | model | epochs | test accuracy % | paper % | time s |\n|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for rule in args.rules.split(","):
            start = time.perf_counter()
            result = fo_edge.simulate(rule=rule, device="gpu-fp32", model=model, epochs=args.epochs,
                                      batch_size=args.batch_size, out=f"runs/bench-accuracy/{rule}-{model}",
                                      rule_options=OPTIONS.get(rule, {}))
            print(f"| {rule} | {model} | {args.epochs} | {100 * result.accuracy:.2f} | {PAPER[rule]} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
