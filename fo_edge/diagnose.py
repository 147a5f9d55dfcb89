"""Why a rule learns or does not: per-layer alignment of its update with BP's gradient, and orthogonality drift.

For a batch and the current weights, ``cosine_l = <g_rule_l, g_bp_l> / (|g_rule_l| |g_bp_l|)`` (both from
``rules.compute_updates`` on the same batch, so 1 means the rule follows the gradient, 0 is a random
direction) and ``drift_l = |W_l^T W_l - I|_F`` on the smaller Gram side (0 for an orthogonal layer, FOTON's
premise). A fresh run trains on the PyTorch path and samples both every ``every`` steps; a saved run is
measured once, averaged over test batches. A saved MANO run compares per stage (stem, blocks, head) the
direction its rule moves the parameters in with BP's gradient (engine.mano_loop.stage_updates); no drift.
A saved spiking run (either backend) compares, on its real weights in the float spiking net, the rule's step
direction with BP through time using snnTorch's surrogate spike derivative (engine.spiking_torch).
A saved conv run (models.conv) compares FOTON's conv update with
autograd's kernel gradient (rules.foton_conv) on its host weights; a conv layer's drift is that of its circular
convolution operator A on the (C, H, W) map, |A^T A - I|_F (co-isometries: |A A^T - I|_F), exact through the
2-D DFT, which block-diagonalises A into the C_out x C_in matrices K^(u, v), one per frequency:
drift^2 = sum_{u, v} |K^(u, v)^H K^(u, v) - I|_F^2.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .data import load_dataset
from .engine.torch_loop import train_torch
from .errors import ConfigError
from .models.mlp import init_weights, parse_model_spec
from .rules import RULES, compute_updates, rule_config
from .runs import load_trained, read_run, real_weights, write_file_atomic

__all__ = ["orthogonality_drift", "layer_diagnostics", "diagnose_fresh", "diagnose_run", "plot_diagnostics"]


def layer_diagnostics(rule: str, weights, x, t, activation: str, config=None,
                      error: str = "ce") -> tuple[list[float], list[float]]:
    """(cosine with BP per layer, orthogonality drift per layer) for weights W_l on batch (x, t)."""
    options = {}
    if config is not None and rule == "foton" and getattr(config, "projection", None) is not None:
        options["projection"] = config.projection
    ws = [torch.as_tensor(w, dtype=torch.float64) for w in weights]
    xt, tt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    fields = {} if config is None else {k: v for k, v in vars(config).items() if k != "projection"}
    g_rule = compute_updates(rule, ws, xt, tt, activation=activation, error=error, **fields, **options)
    g_bp = compute_updates("bp", ws, xt, tt, activation=activation, error=error)
    cosines, drifts = [], []
    for w, a, b in zip(ws, g_rule, g_bp):
        norm = float(a.norm() * b.norm())
        cosines.append(float((a * b).sum()) / norm if norm > 0 else 0.0)
        drifts.append(orthogonality_drift(w))
    return cosines, drifts


def diagnose_fresh(rule: str, *, model: str, dataset: str = "mnist", steps: int = 200, every: int = 20,
                   batch_size: int = 32, lr: float | None = None, activation: str | None = None, seed: int = 0,
                   rule_options: dict | None = None) -> dict:
    """Train ``steps`` steps of ``rule`` (PyTorch path) and sample the diagnostics every ``every`` steps."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(sorted(RULES))}")
    if steps < 1 or every < 1:
        raise ConfigError("--steps and --every must be positive")
    if isinstance(model, str) and model.strip().startswith("c"):
        raise ConfigError(f"--model {model}: conv nets are diagnosed from a saved run (fo-edge simulate --model "
                          f"{model} ..., then fo-edge diagnose RUN_DIR)")
    spec = RULES[rule]
    activation = activation or spec.default_activation
    config = rule_config(rule, **(rule_options or {}))
    dims = parse_model_spec(model)
    data = load_dataset(dataset).limited(steps * batch_size)
    if dims[0] != data.n_features:
        raise ConfigError(f"--model {model} needs {data.n_features} inputs for {data.name}")
    series: dict = {"step": [], "cosine": [], "drift": []}

    def on_step(step, ws, x, t, cfg):
        if step % every == 0 or step == steps - 1:
            cos, drift = layer_diagnostics(rule, [w.detach() for w in ws], x, t, activation, cfg)
            series["step"].append(step)
            series["cosine"].append(cos)
            series["drift"].append(drift)

    train_torch(init_weights(dims, seed=seed), data, rule, config, activation=activation, error="ce",
                lr=spec.default_lr if lr is None else lr, epochs=1, batch_size=batch_size, seed=seed,
                on_step=on_step)
    return {"rule": rule, "model": model, "dataset": data.name, "activation": activation, "source": "fresh run",
            "layers": len(dims) - 1, **series}


def conv_operator_drift(kernel: torch.Tensor, height: int, width: int) -> float:
    """|A^T A - I|_F of the circular convolution A by ``kernel`` (C_out, C_in, k, k) on (C_in, height, width)
    maps, on the smaller Gram side (module docstring)."""
    c_out, c_in = kernel.shape[:2]
    padded = torch.zeros(c_out, c_in, height, width, dtype=torch.complex128)
    k = kernel.shape[-1]
    for dy in range(k):  # tap (dy, dx) of a 'same' cross-correlation shifts by (dy - k//2, dx - k//2)
        for dx in range(k):
            padded[:, :, (dy - k // 2) % height, (dx - k // 2) % width] += kernel[:, :, dy, dx].to(torch.float64)
    spectrum = torch.fft.fft2(padded).permute(2, 3, 0, 1)  # (H, W, C_out, C_in)
    gram = spectrum.conj().transpose(-2, -1) @ spectrum if c_out >= c_in else \
        spectrum @ spectrum.conj().transpose(-2, -1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    return float(torch.sqrt((gram - eye).abs().pow(2).sum()))


def conv_layer_diagnostics(run, x: np.ndarray, t: np.ndarray) -> tuple[list[float], list[float]]:
    """(cosine with autograd's gradient, operator drift) per layer of a saved conv run on batch (x, t)."""
    from .engine.conv_loop import ConvTrainConfig
    from .models.conv import ConvSpec
    from .rules.foton import FOTONConfig
    from .rules.foton_conv import bp_conv_update_torch, foton_conv_update_torch

    cfg = run.record["config"]
    conv = cfg["conv"]
    spec = ConvSpec(tuple(conv["channels"]), int(run.dims[-1]), tuple(conv["in_shape"]), int(conv["kernel"]))
    n_conv = len(spec.channels)
    ws = [torch.as_tensor(run.stored[f"K{l}"], dtype=torch.float64) for l in range(n_conv)]
    ws.append(torch.as_tensor(run.stored[f"W{n_conv}"], dtype=torch.float64))
    xt, tt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    temperature = float(cfg.get("temperature", ConvTrainConfig().temperature))
    g_bp = bp_conv_update_torch(spec, ws, xt, tt, activation=cfg["activation"], error=cfg["error"],
                                temperature=temperature)
    g_rule = g_bp if cfg["rule"] == "bp" else foton_conv_update_torch(
        spec, ws, xt, tt, activation=cfg["activation"], error=cfg["error"],
        config=FOTONConfig(temperature=temperature))
    shapes = spec.layer_shapes()
    cosines, drifts = [], []
    for l, (w, a, b) in enumerate(zip(ws, g_rule, g_bp)):
        norm = float(a.norm() * b.norm())
        cosines.append(float((a * b).sum()) / norm if norm > 0 else 0.0)
        if l < n_conv:
            drifts.append(conv_operator_drift(w, shapes[l][1], shapes[l][2]))
        else:
            drifts.append(orthogonality_drift(w))
    return cosines, drifts


def diagnose_run(run_dir: str | Path, *, batches: int = 8, batch_size: int = 64) -> dict:
    """The diagnostics of a saved run's final weights (MLP, conv or MANO), averaged over ``batches`` test
    batches."""
    record = read_run(run_dir)
    if record["config"].get("mano"):
        return _diagnose_mano_run(record, run_dir, batches, batch_size)
    run = load_trained(run_dir, spiking=True, conv=True)
    cfg = run.record["config"]
    if cfg.get("conv"):
        return _diagnose_conv_run(run, run_dir, batches, batch_size)
    if run.profile.spiking is not None:
        return _diagnose_spiking_run(run, run_dir, batches, batch_size)
    data = load_dataset(cfg["dataset"] if cfg.get("data_dir") is None else None, cfg.get("data_dir"))
    weights = real_weights(run)
    config = rule_config(cfg["rule"], **cfg.get("rule_options", {}))
    eye = np.eye(run.dims[-1])
    results = [layer_diagnostics(cfg["rule"], weights, data.x_test[i * batch_size:(i + 1) * batch_size],
                                 eye[data.y_test[i * batch_size:(i + 1) * batch_size]], run.activation, config)
               for i in range(batches)]
    cosine = np.mean([r[0] for r in results], axis=0).tolist()
    step = run.record["history"][-1]["steps"] if run.record["history"] else 0
    return {"rule": cfg["rule"], "model": cfg["model"], "dataset": data.name, "activation": run.activation,
            "source": str(run_dir), "layers": len(run.dims) - 1, "step": [step], "cosine": [cosine],
            "drift": [results[0][1]]}


def _diagnose_conv_run(run, run_dir, batches: int, batch_size: int) -> dict:
    simulate = run.record["config"].get("simulate") or {}
    data = load_dataset(simulate.get("dataset", run.record["config"]["dataset"])
                        if simulate.get("data_dir") is None else None, simulate.get("data_dir"))
    eye = np.eye(run.dims[-1])
    results = [conv_layer_diagnostics(run, data.x_test[i * batch_size:(i + 1) * batch_size],
                                      eye[data.y_test[i * batch_size:(i + 1) * batch_size]]) for i in range(batches)]
    step = run.record["history"][-1]["steps"] if run.record["history"] else 0
    return {"rule": run.record["config"]["rule"], "model": run.record["config"]["model"], "dataset": data.name,
            "activation": run.activation, "source": str(run_dir), "layers": len(run.dims) - 1, "step": [step],
            "cosine": [np.mean([r[0] for r in results], axis=0).tolist()], "drift": [results[0][1]]}


def orthogonality_drift(w: torch.Tensor) -> float:
    """|W^T W - I|_F of W (d_out, d_in) in float64, on the smaller Gram side."""
    w = w.to(torch.float64)
    gram = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
    return float(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype)))


def spiking_layer_diagnostics(run, weights: list[torch.Tensor], x: np.ndarray, t: np.ndarray,
                              setup: tuple | None = None) -> tuple[list[float], list[float]]:
    """(cosine with BP, orthogonality drift) per layer of a saved spiking run (either backend: its real weights
    on the float spiking net, models.spiking) on batch (x (B, d_0) in [0, 1], t one-hot): the rule's step
    direction (engine.spiking_torch.spiking_updates, the run's hidden error) against BP through time with
    snnTorch's surrogate spike derivative (engine.spiking_torch.surrogate_gradients). ``setup``: the
    :func:`_spiking_setup` of (run, weights), when the caller measures several batches."""
    from .engine.spiking_torch import spiking_updates, surrogate_gradients

    cfg = run.record["config"]
    config, proj, net = setup or _spiking_setup(run, weights)
    temperature = getattr(config, "temperature", 1.0)
    xt, tt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
    rule, _ = spiking_updates(lambda phase, xb, inject=None: net(xb, inject=inject), weights, xt, tt, cfg["rule"],
                              config, proj, error=cfg["error"], temperature=temperature,
                              hidden_error=cfg.get("hidden_error"), timesteps=run.profile.spiking.timesteps)
    bp = surrogate_gradients(net, xt, tt, error=cfg["error"], temperature=temperature)
    return ([_cosine(a.flatten().double(), b.flatten().double()) for a, b in zip(rule, bp)],
            [orthogonality_drift(w) for w in weights])


def _spiking_setup(run, weights: list[torch.Tensor]) -> tuple:
    """(rule config, its feedback G / F, the float spiking net) of a saved spiking run with ``weights``."""
    from .engine.spiking_torch import fixed_feedback
    from .models.spiking import SpikingMLP
    from .rules import projection_torch

    cfg = run.record["config"]
    config = rule_config(cfg["rule"], **cfg.get("rule_options", {}))
    proj = fixed_feedback(cfg["rule"], run.dims, config)
    if proj is None:  # FOTON's F = W_L ... W_1 of the weights measured
        proj = projection_torch(weights)
    return config, proj, SpikingMLP(weights, run.profile.spiking)


def _diagnose_spiking_run(run, run_dir, batches: int, batch_size: int) -> dict:
    cfg = run.record["config"]
    data = load_dataset(cfg["dataset"] if cfg.get("data_dir") is None else None, cfg.get("data_dir"))
    weights = [torch.as_tensor(w) for w in real_weights(run)]
    setup = _spiking_setup(run, weights)
    eye = np.eye(run.dims[-1])
    results = [spiking_layer_diagnostics(run, weights, data.x_test[i * batch_size:(i + 1) * batch_size],
                                         eye[data.y_test[i * batch_size:(i + 1) * batch_size]], setup)
               for i in range(batches) if i * batch_size < len(data.x_test)]
    step = run.record["history"][-1]["steps"] if run.record["history"] else 0
    return {"rule": cfg["rule"], "model": cfg["model"], "dataset": data.name, "activation": run.activation,
            "source": str(run_dir), "layers": len(run.dims) - 1, "step": [step],
            "cosine": [np.mean([r[0] for r in results], axis=0).tolist()], "drift": [results[0][1]]}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> / (|a| |b|) clipped to [-1, 1] (rounding can carry it past), 0 when either is zero."""
    norm = float(a.norm() * b.norm())
    return max(-1.0, min(1.0, float(a @ b) / norm)) if norm > 0 else 0.0


def _diagnose_mano_run(record: dict, run_dir, batches: int, batch_size: int) -> dict:
    """A saved MANO run: per stage (stem, each block, head), the cosine between the direction its rule moves the
    stage's parameters in and BP's gradient (engine.mano_loop.stage_updates, on the run's test inputs and
    targets), averaged over test batches. Orthogonality drift is not defined for attention blocks: None."""
    from .engine.mano_loop import MANOTrainConfig, stage_updates, train_options
    from .mano_run import trained_mano

    model, task, config = trained_mano(run_dir, record)
    cfg = record["config"]
    train = MANOTrainConfig(rule=cfg["rule"], task=cfg["task"], seed=config.seed,
                            **train_options(cfg["rule"], cfg.get("rule_options", {})))
    cosines = []
    for i in range(batches):
        x, y = task.x_test[i * batch_size:(i + 1) * batch_size], task.y_test[i * batch_size:(i + 1) * batch_size]
        if len(x) == 0:
            break
        target = torch.as_tensor((y / task.scale).astype(np.float32) if task.field else y)
        rule = stage_updates(model, torch.as_tensor(x), target, train, task.outputs)
        bp = rule if cfg["rule"] == "bp" else \
            stage_updates(model, torch.as_tensor(x), target, dataclasses.replace(train, rule="bp"), task.outputs)
        cosines.append([_cosine(a, b) for a, b in zip(rule, bp)])
    batch = int(cfg["batch_size"])
    step = len(record["history"]) * -(-int(record["dataset"]["n_train"]) // batch)  # the epochs' steps
    stages = list(cfg.get("stages") or [f"stage{l}" for l in range(len(cosines[0]))])
    return {"rule": cfg["rule"], "model": cfg["model"], "dataset": task.name, "activation": None,
            "source": str(run_dir), "layers": len(stages), "stages": stages, "step": [step],
            "cosine": [np.mean(cosines, axis=0).tolist()], "drift": [[None] * len(stages)]}


def plot_diagnostics(result: dict, path: str | Path) -> None:
    """Cosine with BP and orthogonality drift over steps, one line per layer (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cos, drift = np.array(result["cosine"]), np.array(result["drift"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    names = result.get("stages") or [f"layer {l + 1}" for l in range(result["layers"])]
    for l, name in enumerate(names):
        axes[0].plot(result["step"], cos[:, l], marker=".", label=name)
        if drift[0, l] is not None:  # (None: not defined, MANO's attention blocks)
            axes[1].plot(result["step"], drift[:, l].astype(float), marker=".", label=name)
    axes[0].set(title=f"{result['rule']}: cosine(update, BP gradient)", xlabel="step", ylabel="cosine", ylim=(-1, 1))
    axes[1].set(title="orthogonality drift |W^T W - I|_F", xlabel="step", ylabel="Frobenius norm")
    if not axes[1].lines:
        axes[1].set_title("orthogonality drift: not defined for these layers")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    write_file_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
