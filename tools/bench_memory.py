"""Peak device memory of one training step vs depth, per rule, on a device profile (arena accounting).

    python tools/bench_memory.py --device mcu-int8 --width 32 --batch-size 16

The arena records every buffer the Numba step allocates (in device bytes). "working set" is the peak minus
the weights; the analytic minimum for the streaming schedule is the input batch, the output error, and two
(B, max d_l) activations per pass (clean and modulated) -- 4 x B x max d_l, ALGORITHMS.md -- plus what the
rule keeps besides (x_mod, F, Björck Gram). A "refused" cell is a DeviceMemoryError.
"""
import argparse

from fo_edge.device import load_device
from fo_edge.engine.stream import plan_memory
from fo_edge.errors import DeviceMemoryError
from fo_edge.models import parse_model_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="mcu-int8")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depths", default="2,5,10,20,50")
    args = parser.parse_args()
    profile = load_device(args.device)
    print(f"command: python tools/bench_memory.py --device {args.device} --width {args.width} "
          f"--batch-size {args.batch_size}\n")
    print("| rule | depth | weights B | working set B | analytic min B | ratio | peak / capacity |")
    print("|---|---|---|---|---|---|---|")
    a_b = profile.activation.bytes_per_value
    for rule in ("bp", "pepita", "foton", "ftp"):
        for depth in (int(d) for d in args.depths.split(",")):
            dims = parse_model_spec(f"784-{args.width}x{depth}-10")
            try:
                report = plan_memory(dims, profile, rule, args.batch_size).report()
            except DeviceMemoryError as exc:
                print(f"| {rule} | {depth} | | refused: {str(exc).split(':')[1].split('needs')[0].strip()} | | | |")
                continue
            weights = report["peak_by_category"]["weights"]
            working = report["peak_bytes"] - weights
            cats = report["peak_by_category"]
            extra = cats.get("projection", 0) * (report["peak_flash_bytes"] == 0 or rule == "foton") \
                + cats.get("workspace", 0)
            minimum = (args.batch_size * (dims[0] + 4 * max(dims[1:])) * a_b + cats["errors"] + extra
                       + (args.batch_size * dims[0] * a_b if rule in ("foton", "pepita") else 0))
            if rule == "bp":
                minimum = args.batch_size * (dims[0] + sum(dims[1:-1])) * a_b + cats["errors"]
            print(f"| {rule} | {depth} | {weights} | {working} | {minimum} | {working / minimum:.2f} | "
                  f"{100 * report['peak_bytes'] / report['capacity_bytes']:.1f} % |")


if __name__ == "__main__":
    main()
