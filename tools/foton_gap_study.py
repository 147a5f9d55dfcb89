"""Where FOTON's MNIST gap to BP comes from: the rule, or the orthogonality it needs?

    python tools/foton_gap_study.py --epochs 40

Trains the foton-mnist-mlp recipe's pipeline (784-256-256-10 ReLU, standardised MNIST, batch 256, updates
divided by the configured batch size, dropout 0.1 shared by a step's passes, seed 0) with **BP's exact gradient
followed by Björck on every layer after every step** ("orthogonal BP": projected SGD onto the same orthonormal
weights FOTON keeps), at FOTON's lr 0.5 and at BP's lr 0.1. Set beside ``fo-edge simulate --recipe
foton-mnist-mlp`` (FOTON) and ``--recipe bp-mnist-mlp`` (unconstrained BP), it separates the cost of the
orthogonality constraint from the cost of FOTON's gradient estimate. Prints test accuracy per epoch (last and
best) as a Markdown table.
"""
import argparse

import numpy as np
import torch

from fo_edge.data import load_dataset
from fo_edge.engine.plan import BatchPlan, epoch_order
from fo_edge.engine.torch_loop import dropout_masks, evaluate_torch
from fo_edge.models import init_weights
from fo_edge.rules import RULES, bjorck_torch, rule_config

DIMS = (784, 256, 256, 10)


def orthogonal_bp(lr: float, epochs: int, seed: int = 0, temperature: float = 1.0) -> list[float]:
    """Test accuracy after each epoch of BP + Björck (tolerance 1e-5, at most 20 iterations) every step, the
    error softmax(y / temperature) - t (temperature 1 / ce_T in the FOTON reference's terms)."""
    data = load_dataset("mnist").standardized()
    ws = [torch.as_tensor(w) for w in init_weights(DIMS, seed=seed)]
    x_tr, y_tr = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    x_te, y_te = torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)
    eye, plan, step, curve = torch.eye(10), BatchPlan(batch_divisor="configured"), 0, []
    config = rule_config("bp", temperature=temperature)
    for epoch in range(epochs):
        order = torch.as_tensor(epoch_order(len(x_tr), seed, epoch))
        for begin in plan.starts(len(order), 256):
            idx = order[begin:begin + 256]
            masks = dropout_masks(DIMS, len(idx), 0.1, seed, step, "cpu")
            grads = RULES["bp"].update_torch(ws, x_tr[idx], eye[y_tr[idx]], activation="relu", error="ce",
                                             config=config, masks=masks)
            step_lr = plan.step_lr(lr, epoch, len(idx), 256)
            ws = [bjorck_torch(w - step_lr * g, 20, tol=1e-5) for w, g in zip(ws, grads)]
            step += 1
        curve.append(100 * evaluate_torch(ws, x_te, y_te, "relu"))
        print(f"lr {lr}, temperature {temperature}: epoch {epoch + 1}: {curve[-1]:.2f} %", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lrs", default="0.5,0.1")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="the error's softmax temperature (0.125 is the reference's ce_T 8)")
    args = parser.parse_args()
    rows = [(float(lr), orthogonal_bp(float(lr), args.epochs, temperature=args.temperature))
            for lr in args.lrs.split(",")]
    print(f"\ncommand: python tools/foton_gap_study.py --epochs {args.epochs} --lrs {args.lrs} "
          f"--temperature {args.temperature}\n")
    print("| rule | lr | temperature | last epoch % | best epoch % (epoch) |\n|---|---|---|---|---|")
    for lr, curve in rows:
        best = int(np.argmax(curve))
        print(f"| BP + Björck every step | {lr} | {args.temperature} | {curve[-1]:.2f} | {curve[best]:.2f} "
              f"({best + 1}) |")


if __name__ == "__main__":
    main()
