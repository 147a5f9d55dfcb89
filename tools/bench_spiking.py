"""Accuracy and cost of forward-only rules on the spiking loihi-like device (bit-accurate CUBA-LIF, rate coded,
Lava's default weight format), and the table of ideas tried to raise FTP's spiking accuracy.

    python tools/bench_spiking.py --setting quick          # the quick start's setting, every rule
    python tools/bench_spiking.py --setting best           # the best setting found (several epochs)
    python tools/bench_spiking.py --ideas --limit 12000    # one-epoch screen of each idea (FTP, 784-256-10)

Each row is one ``fo_edge.simulate`` run on MNIST through the Numba path (batch 32 unless said); FOTON runs with
T 0.25, Björck every 10 steps (5 iterations). Prints Markdown tables: test accuracy (final and best epoch),
dynamic and static energy per training sample, estimated device time, cores and simulator wall time; the ideas
table gives each idea's accuracy beside the baseline's. Profiles with a changed threshold, leak or timestep
count are copies of devices/loihi-like.toml written to a temporary directory.
"""
import argparse
import re
import tempfile
import time
from importlib import resources
from pathlib import Path

import fo_edge
from fo_edge.accounting.energy import format_energy
from fo_edge.rules.spiking_binding import SPIKING_DEFAULT_HIDDEN_ERROR, SPIKING_DEFAULT_MODEL

FOTON = {"temperature": 0.25, "bjorck_iters": 5, "ortho_every": 10}
#: the settings: the quick start's (what `fo-edge simulate --device loihi-like` runs) and the best found
SETTINGS = {
    "quick": dict(model=SPIKING_DEFAULT_MODEL, epochs=1, hidden_error=SPIKING_DEFAULT_HIDDEN_ERROR, lr=None),
    "best": dict(model="784-500-10", epochs=8, hidden_error="central", lr=None, lr_milestones=(4, 6), lr_gamma=0.3),
}
#: ideas screened on FTP, 784-256-10, one epoch: (name, simulate options, profile edits)
IDEAS = [
    ("baseline: spike-count difference, lr 0.1", dict(lr=0.1, hidden_error="spike-count"), {}),
    ("central difference (third pass, opposite modulation), lr 0.1", dict(lr=0.1, hidden_error="central"), {}),
    ("central difference, lr 0.2", dict(lr=0.2, hidden_error="central"), {}),
    ("surrogate: input-integral difference where the neuron fires, lr 0.1",
     dict(lr=0.1, hidden_error="surrogate"), {}),
    ("batch 8, lr 0.05", dict(lr=0.05, batch_size=8, hidden_error="spike-count"), {}),
    ("batch 16, lr 0.1", dict(lr=0.1, batch_size=16, hidden_error="spike-count"), {}),
    ("difference target gamma 2", dict(lr=0.1, hidden_error="spike-count", rule_options={"gamma": 2.0}), {}),
    ("difference target gamma 0.5", dict(lr=0.1, hidden_error="spike-count", rule_options={"gamma": 0.5}), {}),
    ("softmax temperature 0.5", dict(lr=0.1, hidden_error="spike-count", rule_options={"temperature": 0.5}), {}),
    ("MSE output error", dict(lr=0.1, hidden_error="spike-count", error="mse"), {}),
    ("threshold 0.5 (central, lr 0.2)", dict(lr=0.2, hidden_error="central"), {"threshold": 0.5}),
    ("threshold 2 (central, lr 0.4)", dict(lr=0.4, hidden_error="central"), {"threshold": 2.0}),
    ("voltage leak dv 256 (central, lr 0.2)", dict(lr=0.2, hidden_error="central"), {"dv": 256}),
    ("32 timesteps (central, lr 0.2)", dict(lr=0.2, hidden_error="central"), {"timesteps": 32}),
]


def profile_copy(folder: Path, edits: dict) -> str:
    """devices/loihi-like.toml with ``[spiking]`` values replaced (the sources say so); returns its path."""
    text = (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text(encoding="utf-8")
    for key, value in edits.items():
        text, hits = re.subn(rf"^{key} = {{ value = [^,]+, source = \"",
                             f"{key} = {{ value = {value}, source = \"bench_spiking edit; was: ", text, flags=re.M)
        assert hits == 1, key
    path = folder / ("loihi-" + "-".join(f"{k}{v}" for k, v in edits.items()) + ".toml")
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(out: str, **options):
    start = time.perf_counter()
    result = fo_edge.simulate(device=options.pop("device", "loihi-like"), out=out, on_unhealthy="warn", **options)
    return result, time.perf_counter() - start


def rules_table(setting: str, rules: list[str], limit, out: str) -> None:
    opts = dict(SETTINGS[setting])
    print(f"setting {setting}: {opts}\n")
    print("| rule | lr | test accuracy % (best) | dynamic E / training sample | static E / training sample | "
          "device time (training) | cores | wall s |\n|---|---|---|---|---|---|---|---|")
    for rule in rules:
        result, wall = run(f"{out}/{setting}-{rule}", rule=rule, limit=limit, **opts,
                           rule_options=FOTON if rule == "foton" else {})
        energy = result.record["energy"]
        static = energy["static"]
        print(f"| {rule} | {result.record['config']['lr']} | {100 * result.accuracy:.2f} "
              f"({100 * result.record['final']['best_test_accuracy']:.2f}) | "
              f"{format_energy(energy['modes']['op']['per_training_sample_pj'])} | "
              f"{format_energy(static['per_training_sample_pj'])} | {static['training_s']:.2f} s | "
              f"{static['cores_used']} | {wall:.0f} |", flush=True)


def ideas_table(limit, out: str, model: str) -> None:
    print(f"FTP on {model}, one epoch, limit {limit}\n\n| idea | test accuracy % | wall s |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, options, edits) in enumerate(IDEAS):
            device = profile_copy(Path(folder), edits) if edits else "loihi-like"
            result, wall = run(f"{out}/idea{i}", rule="ftp", model=model, limit=limit, device=device, **options)
            print(f"| {name} | {100 * result.accuracy:.2f} | {wall:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="quick")
    parser.add_argument("--rules", default="ftp,foton,pepita")
    parser.add_argument("--ideas", action="store_true", help="Screen the ideas table instead (FTP).")
    parser.add_argument("--model", default="784-256-10", help="The ideas screen's model.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="runs/bench-spiking")
    args = parser.parse_args()
    import subprocess
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    print("command: python tools/bench_spiking.py " + (f"--ideas --model {args.model}" if args.ideas else
          f"--setting {args.setting} --rules {args.rules}") + (f" --limit {args.limit}" if args.limit else "")
          + f"\nCPU: {cpu}\n")
    if args.ideas:
        ideas_table(args.limit, args.out, args.model)
    else:
        rules_table(args.setting, args.rules.split(","), args.limit, args.out)


if __name__ == "__main__":
    main()
