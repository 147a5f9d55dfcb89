"""Train against test: the metric of a finished MANO run on its training split beside its test split, to tell a
model that cannot fit the data from one that fits it and does not generalise.

    python tools/mano_fit.py runs/darcy32-dim64-240ep

The run's network is read back with its saved weights (fo_edge.mano_run.trained_mano: run.json's options,
weights.npz) and evaluated in float on both splits of the run's own data: on a field task (Darcy) the mean
relative L2 error of u = outputs * scale (fo_edge.darcy.relative_l2, the run's metric), on a class task the
accuracy of the arg-max class. Prints one line per split and the test metric run.json recorded.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fo_edge.darcy import relative_l2
from fo_edge.errors import FoEdgeError
from fo_edge.mano_run import task_score, trained_mano

CHUNK = 50


def predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's outputs (N, ...) on inputs x (N, ...), CHUNK samples at a time, without a graph."""
    with torch.no_grad():
        return np.concatenate([model(torch.as_tensor(x[i:i + CHUNK])).numpy() for i in range(0, len(x), CHUNK)])


def fit_report(run: Path) -> tuple[str, float, float]:
    """(metric name, on the training split, on the test split) of the finished MANO run in ``run``."""
    try:
        record = json.loads((run / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise FoEdgeError(f"{run}: no readable run.json ({exc})") from None
    if "mano" not in record.get("config", {}):
        raise FoEdgeError(f"{run}: not a MANO run (run.json has no MANO sizes)")
    model, task, _ = trained_mano(run, record)
    train_out, test_out = predict(model, task.x_train), predict(model, task.x_test)
    if task.field:
        return "relative L2", relative_l2(train_out * task.scale, task.y_train * task.scale), task_score(task, test_out)
    return "accuracy", float((train_out.argmax(1) == task.y_train).mean()), task_score(task, test_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished MANO run's directory (run.json, weights.npz)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    try:
        metric, train, test = fit_report(run)
    except FoEdgeError as exc:
        sys.exit(f"error: {exc}")
    recorded = json.loads((run / "run.json").read_text()).get("final", {})
    print(f"command: python tools/mano_fit.py {args.run}")
    print(f"train {metric}  {train:.4f}")
    print(f"test  {metric}  {test:.4f}  (run.json: {recorded.get('relative_l2', recorded.get('test_accuracy'))})")


if __name__ == "__main__":
    main()
