"""Run the paper recipes (recipes/*.toml) and set each result beside the paper's number.

    python tools/reproduce_paper.py                     # quick check: every recipe, 1 epoch, 10,000 samples
    python tools/reproduce_paper.py --full              # every recipe to its paper schedule (hours on 2 cores)
    python tools/reproduce_paper.py --full --recipes foton-mnist-mlp,bp-mnist-mlp

``--full`` writes docs/reproduction.md (paper, ours at the last epoch, ours at the best test epoch, the
difference, seeds, wall time, command) and docs/figures/reproduction/<recipe>.png (test accuracy per epoch
with the paper's number as a line). It is resumable point by point: each recipe runs in OUT/<recipe>
(default runs/reproduce), a complete run is read back instead of rerun, and an interrupted one continues from
its last checkpoint (written every epoch) with ``fo_edge.simulate(resume=...)``. Progress and an ETA are
printed as it goes. The quick mode writes the same table to OUT/reproduction-quick.md only.

It compares accuracies: recipes on a Darcy set (MANO's operator, measured by relative L2, e.g.
bp-darcy32-mano) are left out of the default list and refused by name; run them with
``fo-edge simulate --recipe ID`` (docs/MANO.md holds their curve).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import fo_edge
from fo_edge.recipe import list_recipes, load_recipe, recipe_settings
from fo_edge.runs import write_file_atomic

ROOT = Path(__file__).resolve().parents[1]


def accuracy_recipes() -> list[str]:
    """The bundled recipes this tool compares: every one whose dataset is not a Darcy set."""
    return [rid for rid in list_recipes() if not str(load_recipe(rid).run["dataset"]).startswith("darcy")]


def _run_state(run_dir: Path) -> str:
    path = run_dir / "run.json"
    if not path.exists():
        return "new"
    return json.loads(path.read_text()).get("status", "unknown")


class _Progress:
    """Prints one line at most every ``every`` seconds: samples done, rate, ETA of the whole reproduction."""

    def __init__(self, total: int, done: int, every: float = 60.0):
        self.total, self.done, self.every = total, done, every
        self.start, self.last, self.session = time.perf_counter(), time.perf_counter(), 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.session += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            rate = self.session / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(f"  progress {100 * self.done / self.total:5.1f} % of all points, {rate:.0f} samples/s, "
                  f"ETA {eta / 60:.0f} min", flush=True)


def _point(recipe_id: str, out: Path, full: bool, epochs: int, limit, progress) -> dict:
    recipe = load_recipe(recipe_id)
    run_dir = out / recipe_id
    state = _run_state(run_dir)
    if state == "complete":
        record = json.loads((run_dir / "run.json").read_text())
    else:
        overrides = {"out": str(run_dir), "checkpoint_every": 10 ** 9, "on_unhealthy": "warn"}
        if not full:
            overrides.update(epochs=min(epochs, recipe.run["epochs"]), limit=limit, lr_milestones=())
        settings = recipe_settings(recipe_id, **overrides)
        if state in ("running", "stopped") and full and (run_dir / "checkpoint.npz").exists():
            print(f"  resuming {run_dir}", flush=True)
            result = fo_edge.simulate(resume=run_dir, on_batch=progress)
        else:
            result = fo_edge.simulate(fo_edge.SimulateConfig(**settings), on_batch=progress)
        record = result.record
    return {"recipe": recipe, "record": record, "run_dir": run_dir}


def _row(point: dict) -> dict:
    recipe, record = point["recipe"], point["record"]
    history = record.get("history") or []
    last = 100 * history[-1]["test_accuracy"] if history else None
    best = max(history, key=lambda h: h["test_accuracy"]) if history else None
    paper = recipe.paper.get("test_accuracy")
    return {"id": recipe.id, "rule": recipe.run["rule"], "model": recipe.run["model"], "paper": paper,
            "last": last, "best": 100 * best["test_accuracy"] if best else None,
            "best_epoch": best["epoch"] if best else None, "epochs": len(history),
            "seed": record.get("seed"), "seconds": sum(h.get("seconds", 0.0) for h in history),
            "selection": recipe.paper.get("selection", "last epoch"), "history": history}


def _fmt(value, digits=2, unit="") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _table(rows: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             "| recipe | rule | model | epochs | paper % | ours, last epoch % | ours, best test epoch % (epoch) | "
             "last - paper (pp) | seed | train wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = None if r["paper"] is None or r["last"] is None else r["last"] - r["paper"]
        best = "-" if r["best"] is None else f"{r['best']:.2f} ({r['best_epoch']})"
        lines.append(f"| {r['id']} | {r['rule']} | {r['model']} | {r['epochs']} | {_fmt(r['paper'])} | "
                     f"{_fmt(r['last'])} | {best} | {_fmt(diff, unit='', digits=2)} | {r['seed']} | "
                     f"{r['seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _plot(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    epochs = [h["epoch"] for h in row["history"]]
    ax.plot(epochs, [100 * h["test_accuracy"] for h in row["history"]], marker=".", label="fo-edge")
    if row["paper"] is not None:
        ax.axhline(row["paper"], color="k", linestyle="--", linewidth=1, label=f"paper {row['paper']:.2f} %")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{row['id']} ({row['rule']}, {row['model']})")
    low = min([100 * h["test_accuracy"] for h in row["history"]] + [row["paper"] or 100])
    ax.set_ylim(max(0.0, low - 2), 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda handle: fig.savefig(handle, format="png"))
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(accuracy_recipes()))
    parser.add_argument("--full", action="store_true", help="each recipe's own schedule (resumable)")
    parser.add_argument("--epochs", type=int, default=1, help="quick mode: epochs per recipe")
    parser.add_argument("--limit", type=int, default=10000, help="quick mode: training (and test) samples")
    parser.add_argument("--out", default="runs/reproduce")
    args = parser.parse_args()
    ids = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in ids if r not in list_recipes()]
    if unknown:
        print(f"error: unknown recipe {unknown[0]!r}; choose from {', '.join(accuracy_recipes())}", file=sys.stderr)
        return 2
    fields = [r for r in ids if r not in accuracy_recipes()]
    if fields:
        print(f"error: {fields[0]} is measured by relative L2, not accuracy; run it with fo-edge simulate --recipe "
              f"{fields[0]}", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python tools/reproduce_paper.py " + (f"--full --recipes {args.recipes}" if args.full else
                                                   f"--recipes {args.recipes} --epochs {args.epochs} --limit {args.limit}")

    def size(rid: str) -> int:  # training samples of a point, for the ETA (MNIST's 60,000 per full epoch)
        epochs = load_recipe(rid).run["epochs"]
        return 60000 * epochs if args.full else args.limit * min(args.epochs, epochs)

    def done(rid: str) -> int:
        path = out / rid / "run.json"
        if not args.full or not path.exists():
            return 0
        return 60000 * len(json.loads(path.read_text()).get("history") or [])

    progress = _Progress(sum(size(r) for r in ids), sum(done(r) for r in ids))
    rows = []
    for rid in ids:
        start = time.perf_counter()
        print(f"{rid}: {_run_state(out / rid)}", flush=True)
        row = _row(_point(rid, out, args.full, args.epochs, args.limit, progress))
        rows.append(row)
        print(f"{rid}: last {_fmt(row['last'])} %, best {_fmt(row['best'])} % at epoch {row['best_epoch']}, "
              f"paper {_fmt(row['paper'])} ({time.perf_counter() - start:.0f} s this session)", flush=True)
        table = _table(rows, command)
        target = ROOT / "docs" / "reproduction.md" if args.full else out / "reproduction-quick.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        header = ("# Reproducing the papers\n\nEach row is one recipe (`recipes/<id>.toml`) run to its paper "
                  "schedule on the float PyTorch path. The FOTON reference keeps the epoch with the best *test* "
                  "accuracy; that number is shown beside the last epoch's, never instead of it. Wall times size a "
                  "reproduction (they were taken with one torch thread beside other runs), they are not speed "
                  "figures. Why the FOTON rows miss, and what was measured about it: README, Paper reproduction."
                  "\n\n")
        write_file_atomic(target, lambda handle: handle.write((header + table).encode()))
        if args.full:
            _plot(row, ROOT / "docs" / "figures" / "reproduction" / f"{rid}.png")
    print(_table(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
