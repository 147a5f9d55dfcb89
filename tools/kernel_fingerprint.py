"""Fingerprints of many short Numba-path runs, to show that a kernel change leaves every result bit-identical.

    python tools/kernel_fingerprint.py --out before.json          # on the old code
    python tools/kernel_fingerprint.py --out after.json --against before.json
    python tools/kernel_fingerprint.py --out after.json --against before.json --ftp-option target_mode=error
    python tools/kernel_fingerprint.py --out after.json --against before.json --nearest-updates

Each run is ``fo_edge.simulate`` on the first ``--limit`` MNIST samples: the four MLP rules on mcu-int8,
fpga-fixed16, memristor-rram and gpu-fp32 at batches 1, 3, 8 and 32 (784-64-32-10, tanh, so every kernel path
is taken: direct sums, BLAS, the sparse and dense updates, stochastic and nearest rounding), FTP with ReLU,
FTP, FOTON and PEPITA on the spiking loihi-like device, and the four rules with dropout 0.1 on mcu-int8 (the
masked local errors and backward pass). ``--against`` compares the runs the earlier file holds (a file written
before a run was added still compares). The fingerprint of a run is the SHA-256 of its
final weights, its test accuracy and every counter in run.json. ``--against`` lists the runs whose
fingerprint differs and exits 1 when any does. ``--nearest-updates`` runs every integer device with
``update_rounding = "nearest-even"`` (copies of the bundled profiles, one line changed), so the updates draw
no random numbers: a change to the random draws alone leaves these fingerprints unchanged, and a change to
anything else shows. ``--families`` adds the engines beyond the Numba MLP loop, two epochs each (so a
change to the training loops themselves shows): the four MLP rules on the torch path (gpu-fp32, FOTON and BP
with momentum, FTP with dropout and a learning-rate milestone), the spiking torch path (loihi-like,
``backend="torch"``), BCOP conv nets (FOTON on mcu-int8's Numba path, FOTON and BP on the torch path) and MANO
(BP and FTP on digits, BP and FTP on Darcy 32x32); their fingerprints add every epoch's metrics. The old code
runs this script by path (it only needs ``fo_edge.api.simulate``).
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from fo_edge.api import simulate


def configs(limit: int, ftp_options: dict | None = None) -> list[dict]:
    """The runs to fingerprint (``ftp_options``: rule options given to every FTP run)."""
    runs = [dict(rule=rule, device=device, batch_size=batch, model="784-64-32-10", limit=limit)
            for device in ("mcu-int8", "fpga-fixed16", "memristor-rram", "gpu-fp32")
            for rule in ("ftp", "pepita", "foton", "bp") for batch in (1, 3, 8, 32)]
    runs.append(dict(rule="ftp", device="mcu-int8", batch_size=16, model="784-64-32-10", limit=limit,
                     activation="relu"))
    runs += [dict(rule=rule, device="loihi-like", batch_size=8, model="784-48-10", limit=limit // 2)
             for rule in ("ftp", "foton", "pepita")]
    runs += [dict(rule=rule, device="mcu-int8", batch_size=16, model="784-64-32-10", limit=limit, dropout=0.1)
             for rule in ("ftp", "pepita", "foton", "bp")]
    if ftp_options:
        for run in runs:
            if run["rule"] == "ftp":
                run["rule_options"] = dict(ftp_options)
    return runs


def family_configs(limit: int) -> list[dict]:
    """The ``--families`` runs (module docstring): every engine loop besides the Numba MLP one, two epochs."""
    mlp = dict(device="gpu-fp32", backend="torch", batch_size=16, model="784-64-32-10", limit=limit, epochs=2)
    runs = [dict(mlp, rule=rule) for rule in ("ftp", "pepita")]
    runs += [dict(mlp, rule=rule, momentum=0.9, weight_decay=1e-4) for rule in ("foton", "bp")]
    runs.append(dict(mlp, rule="ftp", dropout=0.1, lr_milestones=(1,), lr_gamma=0.5))
    runs += [dict(rule=rule, device="loihi-like", backend="torch", batch_size=8, model="784-48-10",
                  limit=limit // 2, epochs=2) for rule in ("ftp", "foton", "pepita")]
    runs.append(dict(rule="foton", device="mcu-int8", batch_size=4, model="c4-10", limit=limit // 2, epochs=2))
    runs += [dict(rule=rule, device="gpu-fp32", batch_size=16, model="c4-10", limit=limit // 2, epochs=2)
             for rule in ("foton", "bp")]
    mano = "mano:dim=8,depth=2,heads=2,window=4,patch=2"
    runs += [dict(rule=rule, device="gpu-fp32", dataset=dataset, model=mano, batch_size=16, limit=limit // 4,
                  epochs=2) for dataset in ("digits", "darcy32") for rule in ("bp", "ftp")]
    return runs


METRICS = ("test_accuracy", "test_relative_l2", "train_loss", "lr", "bjorck_iters_mean")


def nearest_update_profiles(folder: Path) -> dict[str, str]:
    """Paths of copies of the bundled profiles with ``update_rounding = "nearest-even"``, by profile id."""
    bundled = Path(__import__("fo_edge").__file__).parent / "profiles"
    paths = {}
    for source in sorted(bundled.glob("*.toml")):
        lines = [('update_rounding = "nearest-even"' if line.split("=")[0].strip() == "update_rounding" else line)
                 for line in source.read_text().splitlines()]
        target = folder / source.name
        target.write_text("\n".join(lines) + "\n")
        paths[source.stem] = str(target)
    return paths


def fingerprint(config: dict, profiles: dict[str, str] | None = None) -> dict:
    """Weights hash, accuracy and counters of one run (or the error it raised); ``profiles`` maps device ids
    to the profile files to run instead."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            device = (profiles or {}).get(config["device"], config["device"])
            result = simulate(out=str(Path(folder) / "run"), **{**config, "device": device})
        except Exception as error:  # a run that fails must fail the same way on both sides
            return {"error": f"{type(error).__name__}: {error}"}
        weights = np.load(Path(folder) / "run" / "weights.npz")
        digest = hashlib.sha256()
        for name in sorted(weights.files):
            digest.update(np.ascontiguousarray(weights[name]).tobytes())
        found = {"accuracy": result.accuracy, "weights": digest.hexdigest(), "counters": result.record["counters"]}
        if config.get("epochs", 1) > 1:  # the --families runs: every epoch's metrics too (no timings)
            found["metrics"] = [{k: r[k] for k in METRICS if k in r} for r in result.record["history"]]
        return found


def differences(before: dict, after: dict) -> list[str]:
    """One line per run whose fingerprint differs, naming what differs."""
    lines = []
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            lines.append(f"{key}: missing")
        elif new != old:
            fields = [f for f in ("accuracy", "weights", "error", "metrics") if old.get(f) != new.get(f)]
            counts = old.get("counters", {})
            counters = sorted(c for c in counts if counts[c] != new.get("counters", {}).get(c))
            lines.append(f"{key}: {', '.join(fields + counters[:6])} differ")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the fingerprints (JSON)")
    parser.add_argument("--against", help="fingerprints of the code before the change (JSON)")
    parser.add_argument("--limit", type=int, default=320, help="MNIST samples per run (default 320)")
    parser.add_argument("--ftp-option", action="append", default=[],
                        help="KEY=VALUE rule option for every FTP run, e.g. target_mode=error (the form older code "
                             "knows) to fingerprint FTP's error_preactivation target on both sides")
    parser.add_argument("--families", action="store_true",
                        help="also the torch, spiking torch, conv and MANO loops (see above)")
    parser.add_argument("--nearest-updates", action="store_true",
                        help="round every update to nearest-even (no random draws): see above")
    args = parser.parse_args()
    ftp_options = dict(pair.split("=", 1) for pair in args.ftp_option)
    before = None
    if args.against:
        try:
            before = json.loads(Path(args.against).read_text())
        except (OSError, ValueError) as error:
            sys.exit(f"error: cannot read {args.against}: {error}")
    prints = {}
    folder = tempfile.TemporaryDirectory()
    profiles = nearest_update_profiles(Path(folder.name)) if args.nearest_updates else None
    runs = configs(args.limit, ftp_options) + (family_configs(args.limit) if args.families else [])
    for config in runs:
        key = json.dumps(config, sort_keys=True)
        prints[key] = fingerprint(config, profiles)
        print(key, prints[key].get("accuracy", prints[key].get("error")), flush=True)
    tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
    tmp.write_text(json.dumps(prints, indent=0, sort_keys=True))
    os.replace(tmp, args.out)
    if before is not None:
        lines = differences(before, prints)
        print("\n".join(lines) if lines else "")
        print(f"{len(prints)} runs, {len(lines)} differ from {args.against}")
        sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
