"""Vary one recipe field at a time and print the accuracy each variant reaches (what a paper's number needs).

    python tools/recipe_study.py --recipe foton-mnist-mlp --epochs 40 \\
        --variant "reference:" --variant "lr decay 30/60 x0.1:lr_milestones=30+60,lr_gamma=0.1" \\
        --variant "ce_T 2:temperature=0.5" --variant "no dropout:dropout=0"

A variant is ``NAME:KEY=VALUE,KEY=VALUE``; KEY is a [run] field of the recipe or a rule option (``-o``), a list
is written with ``+`` (``lr_milestones=30+60``). Each variant runs in OUT/<recipe>/<name> and a complete run is
read back instead of rerun, so the study resumes where it stopped. Prints a Markdown table: last epoch, best
test epoch, and the seconds per epoch, with the command.
"""
import argparse
import json
import re
import sys
from pathlib import Path

import fo_edge
from fo_edge.recipe import RUN_FIELDS, recipe_settings


def _value(raw: str):
    if "+" in raw:
        return tuple(int(part) for part in raw.split("+"))
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(raw.lower(), raw)


def _variant(text: str) -> tuple[str, dict, dict]:
    name, _, body = text.partition(":")
    run, options = {}, {}
    for pair in filter(None, (p.strip() for p in body.split(","))):
        key, _, raw = pair.partition("=")
        (run if key in RUN_FIELDS else options)[key] = _value(raw)
    return name.strip(), run, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable)")
    parser.add_argument("--out", default="runs/recipe-study")
    args = parser.parse_args()
    rows = []
    for text in args.variant or ["reference:"]:
        name, run, options = _variant(text)
        run_dir = Path(args.out) / args.recipe / re.sub(r"[^A-Za-z0-9.+-]+", "_", name)
        path = run_dir / "run.json"
        if path.exists() and json.loads(path.read_text()).get("status") == "complete":
            history = json.loads(path.read_text())["history"]
        else:
            overrides = dict(run, out=str(run_dir), checkpoint_every=0, on_unhealthy="warn", rule_options=options)
            if args.epochs is not None:
                overrides["epochs"] = args.epochs
            history = fo_edge.simulate(fo_edge.SimulateConfig(**recipe_settings(args.recipe, **overrides))).history
        best = max(history, key=lambda h: h["test_accuracy"])
        rows.append((name, text.partition(":")[2] or "-", 100 * history[-1]["test_accuracy"],
                     100 * best["test_accuracy"], best["epoch"], len(history),
                     sum(h["seconds"] for h in history) / len(history)))
        print(f"{name}: last {rows[-1][2]:.2f} %, best {rows[-1][3]:.2f} % at epoch {best['epoch']}", flush=True)
    print(f"\ncommand: python tools/recipe_study.py --recipe {args.recipe}"
          + (f" --epochs {args.epochs}" if args.epochs is not None else "")
          + "".join(f' --variant "{v}"' for v in args.variant) + "\n")
    print("| variant | changes | last epoch % | best test epoch % | best epoch | epochs | s/epoch |")
    print("|---|---|---|---|---|---|---|")
    for name, changes, last, best, epoch, epochs, seconds in rows:
        print(f"| {name} | `{changes}` | {last:.2f} | {best:.2f} | {epoch} | {epochs} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
