"""Depth study: peak device memory and energy per training sample vs depth, per rule and device (the headline).

    python tools/depth_study.py --out docs/figures/depth_study.png

Each point is a real ``fo_edge.simulate`` run on MNIST through the Numba device path: ``--steps`` training
steps of ``--batch-size`` (energy per training sample is measured from the counters of those steps), then the
same number of test samples for the inference energy. Models are 784-W x (depth-1)-10 (widths fixed). A run
that does not fit is a DeviceMemoryError, printed as "refused"; its memory column then shows what it would
have needed (the same allocation against unlimited capacity), so the plot can draw the line past the limit.
FOTON re-orthogonalises every 10 steps (5 Björck iterations), as in bench_accuracy.py. The default batch of
80 is the largest at which every forward-only rule still fits the MCU at depth 50 (PEPITA and FOTON keep the
modulated input, B x 784, beside the input). "working set" is the peak minus the weights: flat in depth for
the forward-only rules, growing with depth for BP, which stores every hidden activation.
"""
import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import fo_edge
from fo_edge.accounting.energy import format_energy
from fo_edge.accounting.memory import format_bytes
from fo_edge.device import load_device
from fo_edge.device.spec import Capacity
from fo_edge.engine.stream import plan_memory
from fo_edge.errors import DeviceMemoryError
from fo_edge.models import parse_model_spec

RULES = ("bp", "pepita", "foton", "ftp")
OPTIONS = {"foton": {"ortho_every": 10, "bjorck_iters": 5}}


def required_bytes(dims, device: str, rule: str, batch: int) -> int:
    """Peak bytes of the same allocation on the device with unlimited SRAM and Flash."""
    profile = load_device(device)
    unlimited = dataclasses.replace(profile, capacity=Capacity(2**50, 2**50 if profile.capacity.flash_bytes else 0))
    ortho = rule == "foton"
    return plan_memory(dims, unlimited, rule, batch, ortho=ortho).report()["peak_bytes"]


def study(devices, depths, width, batch, steps, root: Path) -> list[dict]:
    rows = []
    for device in devices:
        capacity = load_device(device).capacity.sram_bytes
        spiking = load_device(device).spiking is not None
        for rule in RULES:
            if spiking and rule == "bp":  # a spiking device trains forward-only rules only (api refuses BP)
                continue
            for depth in depths:
                model = f"784-{width}x{depth - 1}-10" if depth > 1 else "784-10"
                dims = parse_model_spec(model)
                row = {"device": device, "rule": rule, "depth": depth, "model": model, "capacity": capacity,
                       "needed": required_bytes(dims, device, rule, batch)}
                try:
                    result = fo_edge.simulate(rule=rule, device=device, model=model, batch_size=batch,
                                              limit=steps * batch, out=str(root / f"{device}-{rule}-{depth}"),
                                              rule_options=OPTIONS.get(rule, {}))
                except DeviceMemoryError as exc:
                    row.update(status="refused", reason=str(exc).split(":")[1].split("(")[0].strip())
                else:
                    energy = result.record["energy"]
                    mode = energy["modes"][energy["primary"]]
                    row.update(status="ok", peak=result.memory["peak_bytes"], mode=energy["primary"],
                               working=result.memory["peak_bytes"] - result.memory["peak_by_category"]["weights"],
                               train_pj=mode["per_training_sample_pj"], infer_pj=mode["per_inference_sample_pj"])
                rows.append(row)
                print(f"  {device} {rule} depth {depth}: {row['status']}", file=sys.stderr, flush=True)
    return rows


def markdown(rows) -> str:
    lines = ["| device | rule | depth | peak memory | working set | of capacity | energy / training sample | "
             "energy / inference sample | mode |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['device']} | {r['rule']} | {r['depth']} | {format_bytes(r['peak'])} | "
                         f"{format_bytes(r['working'])} | {100 * r['peak'] / r['capacity']:.1f} % | "
                         f"{format_energy(r['train_pj'])} | {format_energy(r['infer_pj'])} | {r['mode']} |")
        else:
            lines.append(f"| {r['device']} | {r['rule']} | {r['depth']} | **refused**: needs "
                         f"{format_bytes(r['needed'])} ({r['reason']} did not fit) | | "
                         f"{100 * r['needed'] / r['capacity']:.0f} % | | | |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({r["device"] for r in rows}, key=[r["device"] for r in rows].index)
    fig, axes = plt.subplots(2, len(devices), figsize=(6 * len(devices), 8), squeeze=False)
    for col, device in enumerate(devices):
        mem_ax, energy_ax = axes[0][col], axes[1][col]
        for rule in RULES:
            pts = [r for r in rows if r["device"] == device and r["rule"] == rule]
            line = mem_ax.plot([r["depth"] for r in pts], [r["needed"] / 1024 for r in pts], marker="o",
                               label=rule)[0]
            refused = [r for r in pts if r["status"] == "refused"]
            if refused:
                mem_ax.scatter([r["depth"] for r in refused], [r["needed"] / 1024 for r in refused], marker="x",
                               s=90, color="black", zorder=3, label="refused (did not fit)" if rule == "bp" else None)
            ok = [r for r in pts if r["status"] == "ok"]
            energy_ax.plot([r["depth"] for r in ok], [r["train_pj"] / 1e6 for r in ok], marker="o",
                           color=line.get_color(), label=rule)
        capacity = pts[0]["capacity"] / 1024
        mem_ax.axhline(capacity, color="grey", linestyle="--", linewidth=1, label="SRAM capacity")
        mem_ax.set(title=f"{device}: peak device memory", xlabel="depth (weight layers)", ylabel="KiB",
                   yscale="log")
        energy_ax.set(title=f"{device}: energy per training sample", xlabel="depth (weight layers)",
                      ylabel="µJ", yscale="log")
        mem_ax.legend(fontsize=8)
        energy_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="mcu-int8,loihi-like")
    parser.add_argument("--depths", default="2,5,10,20,50")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="docs/figures/depth_study.png")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = study(args.devices.split(","), depths, args.width, args.batch_size, args.steps, Path(tmp))
    print(f"command: python tools/depth_study.py --devices {args.devices} --depths {args.depths} --width "
          f"{args.width} --batch-size {args.batch_size} --steps {args.steps} --out {args.out}\n")
    print(markdown(rows))
    plot(rows, Path(args.out))
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
