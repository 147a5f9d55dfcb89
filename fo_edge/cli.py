"""The ``fo-edge`` command line: a thin layer over :mod:`fo_edge.api`.

Every user error (a :class:`FoEdgeError` or a click usage error) becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click
from click.core import ParameterSource

from . import api
from .darcy import DARCY_DATASETS
from .data import DATASETS
from .device import list_devices, load_device
from .errors import FoEdgeError, RunInterrupted
from .accounting.energy import format_energy
from .accounting.memory import format_bytes
from .models.mlp import ACTIVATIONS, INITS
from .engine.plan import BATCH_DIVISORS
from .recipe import list_recipes, load_recipe, recipe_settings
from .rules import BACKENDS, RULES
from .rules.spiking_binding import HIDDEN_ERRORS, SPIKING_DEFAULT_HIDDEN_ERROR, SPIKING_DEFAULT_MODEL

__all__ = ["main", "cli"]


def _parse_rule_options(pairs: tuple[str, ...]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--rule-option {pair!r} must look like KEY=VALUE (e.g. ortho_every=10)")
        for cast in (int, float):
            try:
                options[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            options[key] = raw
    return options


def _parse_milestones(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.UsageError(f"--lr-milestones {text!r} must be epoch numbers joined by commas, e.g. 60,90") from None


def _typed(ctx: click.Context, names) -> set[str]:
    """The options among ``names`` given on the command line (not defaults)."""
    return {name for name in names if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


#: seconds between progress lines when stderr is not a terminal (a log file gets lines, not carriage returns)
PROGRESS_LINE_SECONDS = 30.0


def _progress(tqdm, **kwargs):
    """A tqdm bar on a terminal; elsewhere plain lines, one every PROGRESS_LINE_SECONDS and one at the end."""
    if sys.stderr.isatty():
        return tqdm(file=sys.stderr, **kwargs)
    return _ProgressLines(**kwargs)


class _ProgressLines:
    """Progress for logs and pipes: ``desc: n/total units (p %), s elapsed`` lines, no carriage returns."""

    def __init__(self, total: int, unit: str, desc: str, disable: bool = False):
        self.total, self.unit, self.desc, self.disable = total, unit, desc, disable
        self.n, self.started = 0, time.monotonic()
        self.last = self.started

    def _line(self) -> None:
        if not self.disable:
            share = 100 * self.n / self.total if self.total else 100.0
            click.echo(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({share:.0f} %), "
                       f"{time.monotonic() - self.started:.0f} s elapsed", err=True)

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_LINE_SECONDS:
            self.last = now
            self._line()

    def close(self) -> None:
        self._line()


def _cores(static: dict) -> str:
    """"5 cores", or "96 cores as mapped, 5 tightly packed" when the profile names a larger mapping."""
    charged = static.get("cores_charged", static["cores_used"])
    if charged == static["cores_used"]:
        return f"{charged} cores"
    return f"{charged} cores as mapped, {static['cores_used']} tightly packed"


def _summary_table(result: api.SimulateResult) -> str:
    rec = result.record
    mem = result.memory
    rows = [("rule", rec["config"]["rule"]), ("device", rec["device"]["id"]),
            ("backend", rec["config"]["backend"]), ("dataset", rec["dataset"]["name"]),
            ("test accuracy", f"{100 * result.accuracy:.2f} %") if result.accuracy is not None else
            ("test relative L2", f"{rec['final']['relative_l2']:.4f}" if rec["final"].get("relative_l2") is not None
             else "n/a"),

            ("time", f"{rec['final']['seconds']:.1f} s"),
            ("samples/s", f"{rec['final']['samples_per_s']:.0f}")]
    if rec["final"].get("best_epoch") is not None and len(rec.get("history") or []) > 1:
        rows.insert(5, ("best test epoch", f"{100 * rec['final']['best_test_accuracy']:.2f} % at epoch "
                                           f"{rec['final']['best_epoch']} (reported beside the last, not instead)"))
    if mem:
        rows.append(("peak device memory", f"{format_bytes(mem['peak_bytes'])} of "
                     f"{format_bytes(mem['capacity_bytes'])} ({100 * mem['peak_bytes'] / mem['capacity_bytes']:.1f} %)"))
    else:
        rows.append(("peak device memory", rec.get("memory_note") or "not accounted"))
    totals = (rec.get("counters") or {}).get("totals")
    if totals:
        rows.append(("saturation events", str(totals["saturation_events"])))
        rows.append(("overflow wraps", str(totals["overflow_wraps"])))
        if totals["overflow_wraps"]:
            rows.append(("warning", f"{totals['overflow_wraps']} accumulator values wrapped around (two's "
                                    f"complement): widen accumulator_bits or lower weight_frac_bits"))
        rows.append(("updates lost to rounding", f"{totals['updates_lost']} of "
                     f"{totals['updates_lost'] + totals['weight_writes']} nonzero updates"))
    for warning in rec.get("warnings") or []:
        rows.append(("warning", warning))
    energy = rec.get("energy")
    if energy:
        for name, mode in energy["modes"].items():
            label = "" if len(energy["modes"]) == 1 else f" ({name} mode)"
            rows.append((f"energy / training sample{label}", format_energy(mode["per_training_sample_pj"])))
            rows.append((f"energy / inference sample{label}", format_energy(mode["per_inference_sample_pj"])))
        static = energy.get("static")
        if static:
            rows.append(("static energy / training sample", f"{format_energy(static['per_training_sample_pj'])} "
                         f"({_cores(static)}, {1e3 * static['training_s']:.3g} ms device time)"))
    else:
        rows.append(("energy", "not counted on this path (use --backend numba)"))
    rows.append(("run directory", str(result.run_dir)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """fo-edge: can this network be trained on that device without backpropagation, and at what cost?"""
    ctx.obj = {"debug": debug}


@cli.command()
@click.option("--rule", type=click.Choice(sorted(RULES)), default="ftp", show_default=True)
@click.option("--device", default="loihi-like", show_default=True, help="Device id (see `fo-edge devices`) or a .toml path.")
@click.option("--dataset", type=click.Choice((*DATASETS, *DARCY_DATASETS)), default="mnist", show_default=True,
              help="darcy32/darcy64: Darcy flow fields (generated and cached), for --model mano.")
@click.option("--data-dir", type=click.Path(), default=None, help="A directory of IDX files instead of --dataset.")
@click.option("--model", default=None,
              help=f"Widths, e.g. 784-256x12-10; or conv channels then classes, e.g. c16-c32-10 (FOTON/BP); or mano, "
                   f"mano:dim=32,depth=2,heads=2,window=4,patch=2 (BP/FTP). Default: "
                   f"{api.DEFAULT_MODEL}; spiking devices {SPIKING_DEFAULT_MODEL}.")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default=None, help="Default: the rule's (see `fo-edge rules`).")
@click.option("--error", type=click.Choice(["ce", "mse"]), default="ce", show_default=True)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate (default: the rule's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use only the first N training (and test) samples.")
@click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/<rule>-<device>-<time>).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Default: torch for float devices, numba otherwise.")
@click.option("--schedule", type=click.Choice(["stream", "store"]), default="stream", show_default=True)
@click.option("--torch-device", default="cpu", show_default=True, help="cpu or cuda (torch backend).")
@click.option("--rule-option", "-o", multiple=True,
              help="Rule option KEY=VALUE, e.g. -o ortho_every=10 (MANO's ftp: -o block_loss=target).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True,
              help="Steps between checkpoints (numba path; 0: none).")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue an interrupted run directory from its last checkpoint, with the options it was started "
                   "with (other run options are refused beside it).")
@click.option("--overwrite", is_flag=True, help="Replace the run that --out already holds.")
@click.option("--threads", type=int, default=None,
              help="Threads for the kernels (and torch on the torch path); default: every available core. Numba "
                   "results do not depend on it.")
@click.option("--on-unhealthy", type=click.Choice(["stop", "warn"]), default="stop", show_default=True,
              help="What NaN/Inf, exploding weights, saturation storms or stalled updates do.")
@click.option("--saturation-limit", type=float, default=0.5, show_default=True,
              help="A layer's clipped fraction per step that counts as a saturation storm.")
@click.option("--stall-steps", type=int, default=500, show_default=True,
              help="Consecutive steps of all-lost updates that count as stalled learning.")
@click.option("--recipe", default=None,
              help="A paper recipe (see `fo-edge recipes`) or a recipe .toml; options given beside it override "
                   "its fields.")
@click.option("--normalize", type=click.Choice(api.NORMALIZATIONS), default="none", show_default=True,
              help="standard: subtract the training split's mean pixel and divide by its std (MNIST 0.1307/0.3081).")
@click.option("--drop-last/--keep-last", default=False, show_default=True,
              help="Skip each epoch's final partial batch.")
@click.option("--batch-divisor", type=click.Choice(BATCH_DIVISORS), default="actual", show_default=True,
              help="Average each update over the batch's actual rows, or divide by --batch-size (FOTON reference).")
@click.option("--lr-milestones", default="", help="Epochs after which the lr is multiplied by --lr-gamma, e.g. 60,90.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True, help="SGD momentum (torch path).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 weight decay (torch path).")
@click.option("--dropout", type=float, default=0.0, show_default=True,
              help="Dropout on hidden pre-activations, one mask shared by a step's passes (torch path).")
@click.option("--init", type=click.Choice(INITS), default="orthogonal", show_default=True,
              help="Initial weights: semi-orthogonal, PyTorch's uniform, or He uniform (PEPITA reference).")
@click.option("--hidden-error", type=click.Choice(HIDDEN_ERRORS), default=None,
              help="Spiking devices: a hidden layer's error from the spike counts of the clean and modulated "
                   "passes, their central difference (a third pass, modulated the other way), or a surrogate "
                   f"(input-integral difference where the neuron fires). Default: {SPIKING_DEFAULT_HIDDEN_ERROR}.")
@click.option("--json", "as_json", is_flag=True, help="Print run.json to stdout instead of the table.")
@click.pass_context
def simulate(ctx: click.Context, resume, as_json, rule_option, recipe, lr_milestones, **options) -> None:
    """Train a model with a learning rule under a device model; print accuracy, energy and memory."""
    from tqdm import tqdm

    if resume is not None:
        given = sorted(_typed(ctx, ("rule_option", "recipe", "lr_milestones", *options)))
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise click.UsageError(f"--resume continues a run with the options it was started with; drop {flags} "
                                   f"(or start a new run with them)")
    stop = _StopOnSignal()  # Ctrl-C and SIGTERM: status interrupted, resumable

    options["lr_milestones"] = _parse_milestones(lr_milestones)
    options["rule_options"] = _parse_rule_options(rule_option)
    if recipe is not None:
        given = _typed(ctx, options)
        settings = recipe_settings(recipe, **{name: options[name] for name in given | {"rule_options"}})
        config = api.SimulateConfig(**{**{k: v for k, v in options.items() if k not in settings}, **settings})
    else:
        config = api.SimulateConfig(**options)
    label = f"resuming {resume}" if resume is not None else f"{config.rule} on {config.device}"
    bar: list = []

    def on_start(total: int) -> None:
        bar.append(_progress(tqdm, total=total, unit="sample", desc=label, disable=as_json))
        stop.training = True

    def on_batch(n: int) -> None:
        bar[0].update(n)
        stop.check()

    try:
        result = api.simulate(None if resume is not None else config, on_start=on_start, on_batch=on_batch,
                              resume=resume)
    finally:
        if bar:
            bar[0].close()
    click.echo(json.dumps(result.record, indent=2) if as_json else _summary_table(result))


@cli.command("energy-report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json", "csv"]), default="table",
              show_default=True)
@click.option("--by-layer", is_flag=True, help="One row per run and layer (training energy and MACs).")
@click.option("--mode", type=click.Choice(["op", "system"]), default=None,
              help="Energy mode (default: each run's primary; system exists for devices with a measured pJ/MAC).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: energy by phase per run, and memory vs depth when depths differ.")
def energy_report(run_dirs, fmt, by_layer, mode, plot) -> None:
    """Compare runs: accuracy, energy per training and inference sample by phase, peak memory vs capacity."""
    from .report import render

    rows = api.energy_report(list(run_dirs), by_layer=by_layer, mode=mode, plot=plot)
    click.echo(render(rows, fmt))
    if plot:
        click.echo(f"plot written to {plot}", err=True)


def _export_line(report: dict) -> str:
    if report["kind"] == "nir":
        verdict = "verified" if report["passed"] else "FAILED verification"
        return (f"NIR {report['model']} ({report['bytes'] / 1024:.1f} KiB) {verdict} in snnTorch: predicted classes "
                f"agree with fo-edge's float spiking inference on {100 * report['agreement_float']:.2f} % of "
                f"{report['test_samples']} test samples (need {100 * report['min_agreement']:.1f} %) and with the "
                f"{report['device']} integer device on {100 * report['agreement_device']:.2f} %; accuracy "
                f"{100 * report['nir_accuracy']:.2f} % over {report['readout_steps']} readout steps")
    if report["kind"] == "int8":
        detail = (f"predictions identical to the {report['device']} device on "
                  f"{100 * report['prediction_agreement']:.2f} % of {report['test_samples']} test samples (need "
                  f"{100 * report['min_agreement']:.1f} %), max logit difference {report['max_logit_diff']:g} "
                  f"(allowed {report['logit_tolerance']:g})")
    else:
        what = "output" if "onnx_relative_l2" in report else "logit"
        detail = (f"max |{what} difference| vs PyTorch {report['max_abs_diff']:.2e} (allowed "
                  f"{report['tolerance']:g}) on {report['test_samples']} test samples")
    verdict = "verified" if report["passed"] else "FAILED verification"
    metric = (f"relative L2 error {report['onnx_relative_l2']:.4f}" if "onnx_relative_l2" in report else
              f"accuracy {100 * report['onnx_accuracy']:.2f} %")
    return (f"{report['kind']} ONNX {report['model']} ({report['bytes'] / 1024:.1f} KiB) {verdict} in onnxruntime: "
            f"{detail}; {metric}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--int8", is_flag=True, help="Integer graph with the device's scales (8-bit devices, e.g. mcu-int8).")
@click.option("--nir", "nir_out", default=None, type=click.Path(dir_okay=False),
              help="The .nir file to write (spiking runs): a NIR graph, verified through snnTorch's importer.")
def export(run_dir, out, int8, nir_out) -> None:
    """Export a trained run to ONNX (verified in onnxruntime) or a spiking run to NIR (verified in snnTorch)."""
    if (out is None) == (nir_out is None):
        raise click.UsageError("give exactly one of --out FILE.onnx and --nir FILE.nir")
    if nir_out is not None:
        if int8:
            raise click.UsageError("--int8 applies to ONNX export (--out), not to --nir")
        report, target = api.export_nir_model(run_dir, nir_out), nir_out
    else:
        report, target = api.export_model(run_dir, out, int8=int8), out
    if report.get("note"):
        click.echo(f"warning: {report['note']}", err=True)
    click.echo(_export_line(report))
    click.echo(f"report: {target}.verify.json")
    if not report["passed"]:
        sys.exit(1)


@cli.command()
@click.option("--steps", type=int, default=300, show_default=True, help="Training steps (batch 32).")
@click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/demo-<time>).")
def demo(steps, out) -> None:
    """On-device training demo: FTP on a simulated int8 MCU, its costs, and a verified ONNX export."""
    from tqdm import tqdm

    click.echo(f"fo-edge demo: train a {api.DEMO_MODEL} MLP on MNIST from scratch with FTP, a forward-only rule "
               f"(no backward pass, no stored activations), on a simulated Cortex-M7 MCU: int8 weights and "
               f"activations, stochastic-rounded updates, 256 KB of SRAM. {steps} steps of 32 samples.")
    bar: list = []

    def on_start(total: int) -> None:
        bar.append(_progress(tqdm, total=total, unit="sample", desc="training on mcu-int8"))

    try:
        result = api.demo(out, steps=steps, on_start=on_start, on_batch=lambda n: bar[0].update(n))
    finally:
        if bar:
            bar[0].close()
    click.echo(_summary_table(result.run))
    for report in result.exports:
        click.echo(_export_line(report))
    if not all(r["passed"] for r in result.exports):
        sys.exit(1)


@cli.command()
@click.argument("spec", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (points, summary).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=int, default=None, help="Parallel points (default: the cores).")
@click.option("--ray-address", default=None, help="Join this Ray cluster (default: a local Ray instance).")
def sweep(spec, out, executor, workers, ray_address) -> None:
    """Run a grid of simulate runs from a TOML spec, then collate tables and plots (see fo_edge/sweep.py)."""
    from tqdm import tqdm

    from . import sweep as sweeps

    bar: list = []

    def on_progress(status: dict, done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, initial=done - 1, unit="point", desc="sweep", file=sys.stderr))
        bar[0].update(1)
        if status["status"] == "failed":
            tqdm.write(f"point {status['point']} failed: {status['error']}", file=sys.stderr)

    if workers is not None and workers < 1:
        raise click.UsageError("--workers must be at least 1")
    try:
        record = sweeps.run_sweep(spec, out, executor=executor, workers=workers, ray_address=ray_address,
                                  on_progress=on_progress)
    finally:
        if bar:
            bar[0].close()
    counts: dict[str, int] = {}
    for status in record["statuses"]:
        key = status["status"].split(" ")[0]
        counts[key] = counts.get(key, 0) + 1
    click.echo(f"{record['points']} points: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    summary = Path(out) / "summary.md"
    if summary.exists():
        click.echo(summary.read_text().rstrip())
        click.echo(f"tables and plots in {out} (summary.md, summary.csv, energy.png, pareto.png, sweep.json)")
    if counts.get("failed"):
        sys.exit(1)


@cli.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--rule", type=click.Choice(sorted(RULES)), default="foton", show_default=True)
@click.option("--model", default="784-256x4-10", show_default=True)
@click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True)
@click.option("--steps", type=int, default=200, show_default=True, help="Training steps of the fresh run.")
@click.option("--every", type=int, default=20, show_default=True, help="Steps between samples.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None)
@click.option("--activation", type=click.Choice(ACTIVATIONS), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rule-option", "-o", multiple=True, help="Rule option KEY=VALUE.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG of both over steps and layers.")
@click.option("--json", "as_json", is_flag=True)
def diagnose(run_dir, rule, model, dataset, steps, every, batch_size, lr, activation, seed, rule_option, plot,
             as_json) -> None:
    """Per-layer cosine between a rule's update and BP's gradient, and orthogonality drift |W^T W - I|_F, for
    a saved RUN_DIR or a fresh short run."""
    result = api.diagnose(run_dir, plot=plot, rule=rule, model=model, dataset=dataset, steps=steps, every=every,
                          batch_size=batch_size, lr=lr, activation=activation, seed=seed,
                          rule_options=_parse_rule_options(rule_option))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['rule']} on {result['model']} ({result['dataset']}, {result['activation'] or 'MANO'}; "
               f"{result['source']}), sampled at steps {result['step'][0]}..{result['step'][-1]}")
    names = result.get("stages") or [str(l + 1) for l in range(result["layers"])]
    width = max(5, *(len(name) for name in names))
    click.echo(f"{'layer':<{width}}  cosine with BP (first -> last)  drift |W^T W - I|_F (first -> last)")
    for l, name in enumerate(names):
        first, last = result["drift"][0][l], result["drift"][-1][l]
        drift = "n/a (attention blocks)" if first is None else f"{first:.3g} -> {last:.3g}"
        click.echo(f"{name:<{width}}  {result['cosine'][0][l]:+.3f} -> {result['cosine'][-1][l]:+.3f}{'':14}{drift}")
    if plot:
        click.echo(f"plot written to {plot}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def devices(as_json: bool) -> None:
    """List the bundled device profiles."""
    profiles = [load_device(name) for name in list_devices()]
    if as_json:
        click.echo(json.dumps([{"id": p.id, "name": p.name, "arithmetic": p.arithmetic.value,
                                "sram_bytes": p.capacity.sram_bytes} for p in profiles], indent=2))
        return
    for p in profiles:
        click.echo(f"{p.id:<16} {p.arithmetic.value:<7} {p.name}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def recipes(as_json: bool) -> None:
    """List the bundled paper recipes (fo-edge simulate --recipe ID)."""
    loaded = [load_recipe(name) for name in list_recipes()]
    if as_json:
        click.echo(json.dumps([{"id": r.id, "title": r.title, "paper": r.paper, "run": r.run,
                                "rule_options": r.rule_options} for r in loaded], indent=2, default=list))
        return
    for r in loaded:
        paper = r.paper.get("test_accuracy")
        click.echo(f"{r.id:<20} {r.run['rule']:<7} {r.run['epochs']:>3} epochs  paper "
                   f"{'-' if paper is None else f'{paper:.2f} %':<8} {r.title}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def rules(as_json: bool) -> None:
    """List the learning rules."""
    if as_json:
        click.echo(json.dumps([{"id": r.name, "summary": r.summary, "paper": r.paper,
                                "forward_only": r.forward_only, "default_lr": r.default_lr,
                                "default_activation": r.default_activation} for r in RULES.values()], indent=2))
        return
    for r in RULES.values():
        kind = "forward-only" if r.forward_only else "backward"
        click.echo(f"{r.name:<7} {kind:<12} lr {r.default_lr:<5} {r.default_activation:<5} {r.summary} ({r.paper})")


class _StopOnSignal:
    """SIGINT and SIGTERM handlers for a run. Before training they stop at once; during training they only ask,
    and the run stops at the end of the current step (``check``, from on_batch), so a signal never lands inside
    a kernel's compilation or a checkpoint write. api.simulate records the stop as interrupted."""

    def __init__(self):
        self.training = self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's ignored SIGINT stays ignored
                signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if not self.training:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group, turning user errors into one line and exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="fo-edge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("fo-edge: aborted", err=True)
        sys.exit(130)
    except RunInterrupted as exc:
        click.echo(f"fo-edge: {exc}", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        if debug:
            raise
        click.echo(f"fo-edge: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except FoEdgeError as exc:
        if debug:
            raise
        click.echo(f"fo-edge: error: {exc}", err=True)
        sys.exit(2)
