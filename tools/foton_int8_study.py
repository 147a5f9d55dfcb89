"""Where FOTON's int8 accuracy goes: FOTON on mcu-int8 beside variants of the profile that widen one format
at a time, and beside its fp32 self.

    python tools/foton_int8_study.py --epochs 1 --batch-size 16

Every row is a Numba-path ``fo_edge.simulate`` run of 784-128-128-10 on MNIST with the same seed and data order
and bench_device_accuracy.py's FOTON options (T = 0.25, Björck every 10 steps, 5 iterations). The variants
are written as profile files (a copy of devices/mcu-int8.toml with the named keys changed, as a user would
make one) into a temporary folder; those with wider formats get 4 MiB of SRAM so that memory is not what
they test. The variants include per-channel weight exponents (``weight_scale = "per-channel"``) alone and
with each other change, so the table shows what per-channel scales recover and what remains. A last row
trains only the output layer on fp32 and on mcu-int8 (the hidden layers' update multipliers set to 0), which
shows how much of the gap a linear readout on fixed features already has. ``--only WORD,...`` runs the
variants whose label contains one of the words (and not the last row).
"""
import argparse
import re
import tempfile
from pathlib import Path

import fo_edge
from bench_device_accuracy import OPTIONS
from fo_edge.device import device_text
from fo_edge.rules import numba_binding

BIG_SRAM = {"capacity.sram_bytes": 4 * 1024 * 1024}
VARIANTS = [
    ("forward rounding stochastic", {"forward_rounding": "stochastic"}),
    ("activations 8 bit, LSB 1/64 (frac 6)", {"activation_frac_bits": 6}),
    ("weights: no headroom bit (frac 0)", {"weight_frac_bits": 0}),
    ("activations and errors 16 bit", {"activation_bits": 16, "activation_frac_bits": 12, "error_bits": 16,
                                       "error_frac_bits": 14, **BIG_SRAM}),
    ("weights 16 bit", {"weight_bits": 16, **BIG_SRAM}),
    ("per-channel weight scales", {"weight_scale": "per-channel"}),
    ("per-channel, no headroom bit (frac 0)", {"weight_scale": "per-channel", "weight_frac_bits": 0}),
    ("per-channel, activations and errors 16 bit", {"weight_scale": "per-channel", "activation_bits": 16,
                                                    "activation_frac_bits": 12, "error_bits": 16,
                                                    "error_frac_bits": 14, **BIG_SRAM}),
    ("per-channel, frac 0, errors 16 bit", {"weight_scale": "per-channel", "weight_frac_bits": 0, "error_bits": 16,
                                           "error_frac_bits": 14, **BIG_SRAM}),
    ("per-channel, frac 0, activations 16 bit", {"weight_scale": "per-channel", "weight_frac_bits": 0,
                                                "activation_bits": 16, "activation_frac_bits": 12, **BIG_SRAM}),
    ("per-channel, frac 0, activation LSB 1/32 (frac 5)", {"weight_scale": "per-channel", "weight_frac_bits": 0,
                                                          "activation_frac_bits": 5}),
    ("weights 16 bit, activations and errors 16 bit", {"weight_bits": 16, "activation_bits": 16,
                                                       "activation_frac_bits": 12, "error_bits": 16,
                                                       "error_frac_bits": 14, **BIG_SRAM}),
]


def variant_file(folder: Path, name: str, changes: dict, base: str = "mcu-int8") -> Path:
    """The ``base`` profile (an id or a path; devices/mcu-int8.toml by default) with each ``key`` (a top-level
    key, a ``{ value = ... }`` entry, or section.key)
    set to the given value; raises if a key is not found, so the study never runs an unchanged profile."""
    text = device_text(base)[0]
    text = re.sub(r'^id = "[^"]*"', f'id = "mcu-int8-{name}"', text, flags=re.M)
    for key, value in changes.items():
        leaf = key.split(".")[-1]
        literal = f'"{value}"' if isinstance(value, str) else str(value)
        text, n = re.subn(rf"^({leaf} = \{{ value = )[^,]+,", rf"\g<1>{literal},", text, flags=re.M)
        if n == 0:
            text, n = re.subn(rf'^({leaf} = )"[^"]*"', rf"\g<1>{literal}", text, flags=re.M)
        if n != 1:
            raise SystemExit(f"variant {name}: key {key} not found once in {base}")
    path = folder / f"mcu-int8-{name}.toml"
    path.write_text(text)
    return path


def accuracy(device: str, args, hidden_updates: bool = True) -> float:
    original = numba_binding.update_scales

    def output_only(net, profile, rule, lr, batch):
        mul, div, g_scale = (a.copy() for a in original(net, profile, rule, lr, batch))
        mul[:-1] = 0
        return mul, div, g_scale

    if not hidden_updates:
        numba_binding.update_scales = output_only
    try:
        result = fo_edge.simulate(rule="foton", device=device, model=args.model, epochs=args.epochs,
                                  batch_size=args.batch_size, backend="numba", rule_options=OPTIONS["foton"],
                                  out=f"runs/foton-int8-study/{Path(device).stem}-{hidden_updates}", overwrite=True)
    finally:
        numba_binding.update_scales = original
    return 100 * result.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="784-128-128-10")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base", default="mcu-int8", help="the profile the variants change (id or path)")
    parser.add_argument("--only", default="", help="comma-separated words: run only the variants whose label "
                        "contains one of them (and skip the output-layer-only row)")
    args = parser.parse_args()
    only = [word for word in args.only.split(",") if word]
    print(f"command: python tools/foton_int8_study.py --model {args.model} --epochs {args.epochs} "
          f"--batch-size {args.batch_size} --base {args.base}" + (f" --only '{args.only}'" if only else "") + "\n")
    fp32 = accuracy("gpu-fp32", args)
    print("| profile | FOTON % | against fp32 pp |\n|---|---|---|")
    print(f"| gpu-fp32 | {fp32:.2f} | |", flush=True)
    base = accuracy(args.base, args)
    print(f"| {Path(args.base).stem} | {base:.2f} | {base - fp32:+.2f} |", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for i, (label, changes) in enumerate(VARIANTS):
            if only and not any(word in label for word in only):
                continue
            value = accuracy(str(variant_file(Path(folder), f"v{i}", changes, args.base)), args)
            print(f"| {Path(args.base).stem}, {label} | {value:.2f} | {value - fp32:+.2f} |", flush=True)
    if only:
        return
    readout_fp32 = accuracy("gpu-fp32", args, hidden_updates=False)
    readout_int8 = accuracy(args.base, args, hidden_updates=False)
    print(f"| output layer only: gpu-fp32 {readout_fp32:.2f}, {Path(args.base).stem} | {readout_int8:.2f} | "
          f"{readout_int8 - readout_fp32:+.2f} (against its fp32) |", flush=True)


if __name__ == "__main__":
    main()
