"""Why a rule learns or does not: per-layer alignment of its update with BP's gradient, and orthogonality drift.

For a batch and the current weights, ``cosine_l = <g_rule_l, g_bp_l> / (|g_rule_l| |g_bp_l|)`` (both from
``rules.compute_updates`` on the same batch, so 1 means the rule follows the gradient, 0 is a random
direction) and ``drift_l = |W_l^T W_l - I|_F`` on the smaller Gram side (0 for an orthogonal layer, FOTON's
premise). A fresh run trains on the PyTorch path and samples both every ``every`` steps; a saved run is
measured once, averaged over test batches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import load_dataset
from .engine.torch_loop import train_torch
from .errors import ConfigError
from .models.mlp import init_weights, parse_model_spec
from .rules import RULES, compute_updates, rule_config
from .runs import load_trained, real_weights, write_file_atomic

__all__ = ["layer_diagnostics", "diagnose_fresh", "diagnose_run", "plot_diagnostics"]


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
        gram = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
        drifts.append(float(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype))))
    return cosines, drifts


def diagnose_fresh(rule: str, *, model: str, dataset: str = "mnist", steps: int = 200, every: int = 20,
                   batch_size: int = 32, lr: float | None = None, activation: str | None = None, seed: int = 0,
                   rule_options: dict | None = None) -> dict:
    """Train ``steps`` steps of ``rule`` (PyTorch path) and sample the diagnostics every ``every`` steps."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(sorted(RULES))}")
    if steps < 1 or every < 1:
        raise ConfigError("--steps and --every must be positive")
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


def diagnose_run(run_dir: str | Path, *, batches: int = 8, batch_size: int = 64) -> dict:
    """The diagnostics of a saved run's final weights, averaged over ``batches`` test batches."""
    run = load_trained(run_dir)
    cfg = run.record["config"]
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


def plot_diagnostics(result: dict, path: str | Path) -> None:
    """Cosine with BP and orthogonality drift over steps, one line per layer (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cos, drift = np.array(result["cosine"]), np.array(result["drift"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for l in range(result["layers"]):
        axes[0].plot(result["step"], cos[:, l], marker=".", label=f"layer {l + 1}")
        axes[1].plot(result["step"], drift[:, l], marker=".", label=f"layer {l + 1}")
    axes[0].set(title=f"{result['rule']}: cosine(update, BP gradient)", xlabel="step", ylabel="cosine", ylim=(-1, 1))
    axes[1].set(title="orthogonality drift |W^T W - I|_F", xlabel="step", ylabel="Frobenius norm")
    for ax in axes:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    write_file_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
