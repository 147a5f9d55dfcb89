"""MANO benchmarks: one attention layer's time and peak memory against full softmax attention as the grid
grows, then (``--train``) MANO's accuracy on MNIST and error on Darcy, BP against the forward-only rule's two
block losses (engine.mano_loop: ftp with block_loss readout, the default, and target), and (``--depths``) the
training memory each rule plans as the model deepens.

    python tools/bench_mano.py --grids 16,32,64,128
    python tools/bench_mano.py --grids '' --train --mnist-limit 10000 --mnist-epochs 3 --darcy-epochs 10
    python tools/bench_mano.py --grids '' --depths 1,2,4,8,16
    python tools/bench_mano.py --grids '' --device-train --mnist-limit 10000 --mnist-epochs 3 --darcy-epochs 10
    python tools/bench_mano.py --grids '' --device-fit 'mano;mano:patch=4;mano:dim=16,patch=4'

Layer: B = 1, 32 channels, 2 heads, window 4; the authors' V-cycle (models.mano_vcycle: levels down to 2x2), the
first pooled variant (models.mano.MultipoleAttention: levels to cover the grid) and full attention; forward
without a graph, on the CPU.
Each (layer, grid) runs in a fresh subprocess so its peak resident memory (ru_maxrss after the forward minus
before it) is its own; time is the median of 3 forwards after a warm-up. Growth exponents are least-squares
slopes of log(time) and log(memory) against log(N) over the grids (memory over the grids where the layer
allocated at least 1 MiB, below which the allocator's reuse hides it). The full attention is the explicit
softmax(QK^T)V, as a standard Transformer computes it.

Training (the default, vcycle variant): MANOClassifier (2x2 patches -> 14x14 grid, dim 32, 2 blocks) on MNIST and MANOOperator (dim 32,
2 blocks) on the generated 32x32 Darcy set (1000 train / 200 test, fo_edge.darcy), Adam lr 1e-3, batch 32
(Darcy 16); every trained model is also run with its linear maps on mcu-int8 (rules.mano_binding: inference),
in the profile's activation format (Q3.4 for every map) and with each map's activation exponent calibrated on
the first 256 training inputs (the two int8 columns). ``--tasks`` picks the MNIST rows, the Darcy rows or both.
Device training (``--device-train``): the same models trained with their linear maps on the devices' kernels
(rules.mano_device_training, SGD at --device-lr-mnist / --device-lr-darcy, one thread), on gpu-fp32 and on
mcu-int8 from the same initial weights: BP and FTP's readout loss; with the memory each plans on mcu-int8 (the
capacity lifted so that the plan is reported, not refused) and the energy per training sample. ``--device-fit``:
the memory MNIST classifiers plan on mcu-int8 per batch, "(no)" where it exceeds the profile's 256 KiB.
Depths: the training memory rules.mano_memory plans for the MNIST classifier (batch 32) on gpu-fp32, measured
from what autograd keeps (torch.autograd.graph.saved_tensors_hooks), per depth and rule.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time

import numpy as np

LAYER = r"""
import json, resource, sys, time, torch
from fo_edge.models.mano import MultipoleAttention, levels_for
from fo_edge.models.mano_vcycle import VCycleAttention, vcycle_levels
torch.set_num_threads(2)
size, kind = int(sys.argv[1]), sys.argv[2]
if kind == "vcycle":
    layer = VCycleAttention(32, 2, 4, vcycle_levels(size, size)).eval()
else:
    layer = MultipoleAttention(32, 2, 4, levels_for(size, 4), full=kind == "full").eval()
x = torch.randn(1, size, size, 32)
with torch.no_grad():
    layer(torch.randn(1, 4, 4, 32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    layer(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    times = []
    for _ in range(3):
        start = time.perf_counter(); layer(x); times.append(time.perf_counter() - start)
print(json.dumps({"kib": peak, "seconds": sorted(times)[1]}))
"""


def _layer(size: int, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", LAYER, str(size), kind], capture_output=True, text=True,
                         timeout=1200)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout)


def _slope(ns, values) -> str:
    pairs = [(n, v) for n, v in zip(ns, values) if v and v > 0]
    if len(pairs) < 2:
        return "n/a"
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return f"{np.polyfit(x, y, 1)[0]:.2f}"


KINDS = ("vcycle", "mano", "full")


def bench_layers(grids: list[int]) -> None:
    print("| grid | N | MANO (vcycle) ms | MANO (vcycle) peak MiB | MANO (pooled) ms | MANO (pooled) peak MiB | "
          "full attention ms | full attention peak MiB |\n|---|---|---|---|---|---|---|---|")
    rows = {kind: [] for kind in KINDS}
    for size in grids:
        cells = []
        for kind in KINDS:
            r = _layer(size, kind)
            rows[kind].append(r)
            cells += [f"{1e3 * r['seconds']:.2f}", f"{r['kib'] / 1024:.1f}"] if "error" not in r else [r["error"], ""]
        print(f"| {size}x{size} | {size * size} | " + " | ".join(cells) + " |", flush=True)
    ns = [s * s for s in grids]
    for kind in KINDS:
        t = [r.get("seconds") for r in rows[kind]]
        m = [r.get("kib") if r.get("kib", 0) >= 1024 else None for r in rows[kind]]
        print(f"\n{kind}: time grows as N^{_slope(ns, t)}, peak memory as N^{_slope(ns, m)}")


def bench_training(args) -> None:
    import torch

    from fo_edge.darcy import darcy_dataset, relative_l2
    from fo_edge.data import load_dataset
    from fo_edge.device import load_device
    from fo_edge.engine.mano_loop import MANOTrainConfig, train_mano
    from fo_edge.models.mano import MANOClassifier, MANOOperator
    from fo_edge.rules.mano_binding import DeviceLinears

    torch.set_num_threads(2)
    data = load_dataset("mnist").limited(args.mnist_limit)
    x_test = torch.as_tensor(data.x_test)

    def accuracy(model):
        with torch.no_grad():
            return float((model(x_test).argmax(1).numpy() == data.y_test).mean())

    print("\n| task | rule | block loss | epochs | test metric | int8 (mcu-int8 linears, Q3.4) | int8 (calibrated "
          "exponents) | seconds |\n|---|---|---|---|---|---|---|---|")
    int8 = load_device("mcu-int8")
    maps = []  # (name, trained model) for --int8-maps
    for rule, block_loss in RULES if "mnist" in args.tasks else ():
        torch.manual_seed(0)
        model = MANOClassifier((1, 28, 28), 10, readouts=block_loss == "readout")
        start = time.perf_counter()
        config = MANOTrainConfig(rule=rule, epochs=args.mnist_epochs, block_loss=block_loss or "readout")
        history = train_mano(model, data.x_train, data.y_train, config, accuracy, 10)
        seconds = time.perf_counter() - start
        with DeviceLinears(model, int8):
            fixed = accuracy(model)
        with DeviceLinears(model, int8, torch.as_tensor(data.x_train[:CALIBRATION])):
            calibrated = accuracy(model)
        print(f"| MNIST ({len(data.x_train)} train) accuracy | {rule} | {block_loss or ''} | {args.mnist_epochs} | "
              f"{100 * history[-1]['test_metric']:.2f} % | {100 * fixed:.2f} % | {100 * calibrated:.2f} % | "
              f"{seconds:.0f} |", flush=True)
        if args.int8_maps:
            maps.append((f"{rule} {block_loss or ''}".strip(), model))
    for name, model in maps:
        int8_maps(name, model, int8, torch.as_tensor(data.x_train[:CALIBRATION]), accuracy, x_test[:1000])
    darcy = darcy_dataset(32, 1000, 200, seed=0)
    scale = float(darcy.u_train.std())
    a_test = torch.as_tensor((darcy.a_test - 7.5) / 4.5)

    def error(model):
        with torch.no_grad():
            return relative_l2(model(a_test).numpy() * scale, darcy.u_test)

    for rule, block_loss in RULES if "darcy" in args.tasks else ():
        torch.manual_seed(0)
        model = MANOOperator(size=32, readouts=block_loss == "readout")
        start = time.perf_counter()
        config = MANOTrainConfig(rule=rule, task="field", epochs=args.darcy_epochs, batch_size=16,
                                 block_loss=block_loss or "readout")
        history = train_mano(model, (darcy.a_train - 7.5) / 4.5, darcy.u_train / scale, config, error, 1)
        seconds = time.perf_counter() - start
        with DeviceLinears(model, int8):
            fixed = error(model)
        with DeviceLinears(model, int8, torch.as_tensor((darcy.a_train[:CALIBRATION] - 7.5) / 4.5)):
            calibrated = error(model)
        print(f"| Darcy 32x32 relative L2 | {rule} | {block_loss or ''} | {args.darcy_epochs} | "
              f"{history[-1]['test_metric']:.4f} | {fixed:.4f} | {calibrated:.4f} | {seconds:.0f} |", flush=True)


def device_training(args) -> None:
    """MANO trained on a device's kernels (rules.mano_device_training: every linear map's forward, backward product
    and update in the device's formats, SGD): each (task, rule) trained on gpu-fp32 (float64 through the same
    kernels) and on mcu-int8 from the same initial weights with the same lr, the difference the cost of int8
    training; with the memory the run plans on mcu-int8 (rules.mano_memory.plan_mano_device_memory, at the
    batch and at batch 1) and its energy per training sample (system mode, from the kernels' and the host's
    counters)."""
    import dataclasses

    import torch

    from fo_edge.accounting.counters import counters_record
    from fo_edge.accounting.energy import energy_of
    from fo_edge.accounting.mano_counts import MANOMeter
    from fo_edge.darcy import darcy_dataset, relative_l2
    from fo_edge.data import load_dataset
    from fo_edge.device import load_device
    from fo_edge.engine.mano_loop import MANOTrainConfig, train_mano
    from fo_edge.models.mano import MANOClassifier, MANOOperator
    from fo_edge.rules.mano_device_training import DeviceTraining
    from fo_edge.rules.mano_memory import plan_mano_device_memory

    torch.set_num_threads(1)
    int8 = load_device("mcu-int8")
    roomy = dataclasses.replace(int8, capacity=dataclasses.replace(int8.capacity, sram_bytes=1 << 40))
    tasks = []
    if "mnist" in args.tasks:
        data = load_dataset("mnist").limited(args.mnist_limit)
        x_test = torch.as_tensor(data.x_test)
        tasks.append(("MNIST accuracy", lambda ro: MANOClassifier((1, 28, 28), 10, readouts=ro), data.x_train,
                      data.y_train, "classify", 10, args.mnist_epochs, 32, args.device_lr_mnist,
                      lambda m: float((m(x_test).argmax(1).numpy() == data.y_test).mean()), (784,)))
    if "darcy" in args.tasks:
        darcy = darcy_dataset(32, 1000, 200, seed=0)
        scale = float(darcy.u_train.std())
        a_test = torch.as_tensor((darcy.a_test - 7.5) / 4.5)
        tasks.append(("Darcy relative L2", lambda ro: MANOOperator(size=32, readouts=ro), (darcy.a_train - 7.5) / 4.5,
                      darcy.u_train / scale, "field", 1, args.darcy_epochs, 16, args.device_lr_darcy,
                      lambda m: relative_l2(m(a_test).numpy() * scale, darcy.u_test), (32, 32)))
    print("\n| task | rule | epochs | lr | fp32 (gpu-fp32) | int8 (mcu-int8) | mcu-int8 plan, batch / 1 (KiB) | "
          "energy / training sample (mcu-int8, system) | seconds fp32 / int8 |\n|---|---|---|---|---|---|---|---|---|")
    for name, build, x, y, task, outputs, epochs, batch, lr, score, sample in tasks:
        for rule, block_loss in (("bp", None), ("ftp", "readout")):
            ro = block_loss == "readout"
            cells, seconds = [], []
            for profile in (load_device("gpu-fp32"), int8):
                torch.manual_seed(0)
                model = build(ro)
                meter = MANOMeter(model, device_maps=True)
                config = MANOTrainConfig(rule=rule, task=task, lr=lr, epochs=epochs, batch_size=batch,
                                         block_loss=block_loss or "readout")
                start = time.perf_counter()
                with DeviceTraining(model, profile, lr, counters=meter.counters,
                                    columns=meter.map_columns(model)) as dev:
                    history = train_mano(model, x, y, config, lambda m: evaluate(score, m), outputs, meter=meter,
                                         device=dev)
                seconds.append(time.perf_counter() - start)
                meter.close()
                cells.append(history[-1]["test_metric"])
            energy = energy_of(counters_record(meter.counters, training_samples=meter.trained, inference_samples=0),
                               int8.energy_pj)
            per_sample = energy["modes"]["system"]["per_training_sample_pj"] / 1e6
            plans = [plan_mano_device_memory(build(ro), sample, roomy, rule, b, readouts=ro).report()["peak_bytes"]
                     for b in (batch, 1)]
            fmt = (lambda v: f"{100 * v:.2f} %") if task == "classify" else (lambda v: f"{v:.4f}")
            label = f"{rule} {block_loss or ''}".strip()
            print(f"| {name} | {label} | {epochs} | {lr:g} | {fmt(cells[0])} | {fmt(cells[1])} | "
                  f"{plans[0] / 1024:.0f} / {plans[1] / 1024:.0f} | {per_sample:.1f} uJ | "
                  f"{seconds[0]:.0f} / {seconds[1]:.0f} |", flush=True)


def device_fit(specs: list[str], batches: list[int]) -> None:
    """The training memory an MNIST MANOClassifier plans on mcu-int8 (rules.mano_memory.plan_mano_device_memory),
    per model spec, rule and batch, against the profile's 256 KiB: which can train there."""
    import dataclasses

    import torch

    from fo_edge.device import load_device
    from fo_edge.models.mano import MANOClassifier, parse_mano_spec
    from fo_edge.rules.mano_memory import plan_mano_device_memory

    int8 = load_device("mcu-int8")
    roomy = dataclasses.replace(int8, capacity=dataclasses.replace(int8.capacity, sram_bytes=1 << 40))
    print("\n| model | parameters | rule | " + " | ".join(f"batch {b} (KiB)" for b in batches) +
          " |\n|---|---|---|" + "---|" * len(batches))
    for spec in specs:
        sizes = parse_mano_spec(spec)
        for rule, readouts in (("bp", False), ("ftp", True)):
            torch.manual_seed(0)
            model = MANOClassifier((1, 28, 28), 10, readouts=readouts, **sizes)
            cells = []
            for b in batches:
                peak = plan_mano_device_memory(model, (784,), roomy, rule, b, readouts=readouts).report()["peak_bytes"]
                cells.append(f"{peak / 1024:.0f}" + ("" if peak <= int8.capacity.sram_bytes else " (no)"))
            params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("readouts."))
            print(f"| {spec} | {params} | {rule} | " + " | ".join(cells) + " |", flush=True)


def evaluate(score, model) -> float:
    """score(model) without a graph (on a device: its inference path)."""
    import torch

    with torch.no_grad():
        return score(model)


def int8_maps(name: str, model, profile, calibration, accuracy, x_probe) -> None:
    """One row per linear map of a trained classifier (readouts left out: inference never runs them): the test
    accuracy with that map alone on ``profile``'s integer kernels in the profile's activation format, the mean |x|
    it reads on ``x_probe`` and the share of those inputs below half the format's LSB (rounded to zero), and the
    exponent calibration gives it."""
    import torch

    from fo_edge.rules.mano_binding import DeviceLinears

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    seen: dict[int, list] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: seen.setdefault(i, []).append(args[0].abs().ravel()))
             for i, m in enumerate(m for m in model.modules() if isinstance(m, torch.nn.Linear))]
    with torch.no_grad():
        model(x_probe)
    for hook in hooks:
        hook.remove()
    half_lsb = 0.5 * profile.activation.step
    fracs = DeviceLinears(model, profile, calibration).frac_bits
    print(f"\n{name}: each map alone on {profile.id} (activation format Q{profile.activation.bits - 1 - profile.activation.frac_bits}"
          f".{profile.activation.frac_bits}), the others in fp32\n\n| map | accuracy | mean abs input | inputs below half an "
          "LSB | calibrated fraction bits |\n|---|---|---|---|---|")
    for i, map_name in enumerate(names):
        if map_name.startswith("readouts"):
            continue
        with DeviceLinears(model, profile, maps=[i]):
            acc = accuracy(model)
        values = torch.cat(seen[i])
        print(f"| {map_name} | {100 * acc:.2f} % | {float(values.mean()):.3f} | "
              f"{100 * float((values < half_lsb).double().mean()):.1f} % | {fracs[i]} |", flush=True)


#: training inputs that calibrate the int8 maps' activation exponents (rules.mano_binding.DeviceLinears)
CALIBRATION = 256

#: (rule, block loss) pairs the training rows compare
RULES = (("bp", None), ("ftp", "readout"), ("ftp", "target"))


def bench_depths(depths: list[int]) -> None:
    import torch

    from fo_edge.device import load_device
    from fo_edge.models.mano import MANOClassifier
    from fo_edge.rules.mano_memory import plan_mano_memory

    device = load_device("gpu-fp32")
    print("\n| depth | " + " | ".join(f"{rule} {loss or ''} MiB (activations)".replace("  ", " ")
                                     for rule, loss in RULES) + " |\n|---|" + "---|" * len(RULES))
    for depth in depths:
        cells = []
        for rule, block_loss in RULES:
            torch.manual_seed(0)
            model = MANOClassifier((1, 28, 28), 10, depth=depth, readouts=block_loss == "readout")
            report = plan_mano_memory(model, (784,), device, rule, 32, 10, False,
                                      readouts=block_loss == "readout").report()
            kept = report["peak_by_category"].get("stored_activations", 0) + \
                report["peak_by_category"].get("activations", 0)
            cells.append(f"{report['peak_bytes'] / 2**20:.1f} ({kept / 2**20:.1f})")
        print(f"| {depth} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", default="16,32,64,128")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--mnist-limit", type=int, default=10000)
    parser.add_argument("--mnist-epochs", type=int, default=1)
    parser.add_argument("--darcy-epochs", type=int, default=10)
    parser.add_argument("--depths", default="", help="comma-separated depths for the training-memory table")
    parser.add_argument("--tasks", default="mnist,darcy", help="the --train rows: mnist, darcy or both")
    parser.add_argument("--device-train", action="store_true", help="train on the devices' kernels: gpu-fp32 "
                        "against mcu-int8 (rules.mano_device_training), the --tasks rows")
    parser.add_argument("--device-lr-mnist", type=float, default=0.3, help="SGD's lr for --device-train on MNIST")
    parser.add_argument("--device-lr-darcy", type=float, default=1e-4, help="SGD's lr for --device-train on Darcy")
    parser.add_argument("--device-fit", default="", help="semicolon-separated MANO specs: the training memory each "
                        "plans on mcu-int8 at --fit-batches")
    parser.add_argument("--fit-batches", default="1,2,3,4,8,32")
    parser.add_argument("--int8-maps", action="store_true", help="after the MNIST rows, each trained classifier's "
                        "linear maps one at a time on mcu-int8 (where its int8 accuracy goes)")
    args = parser.parse_args()
    print("command: python tools/bench_mano.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")
    grids = [int(g) for g in args.grids.split(",") if g]
    if grids:
        bench_layers(grids)
    if args.depths:
        bench_depths([int(d) for d in args.depths.split(",") if d])
    if args.train:
        bench_training(args)
    if args.device_train:
        device_training(args)
    if args.device_fit:
        device_fit(args.device_fit.split(";"), [int(b) for b in args.fit_batches.split(",")])


if __name__ == "__main__":
    main()
