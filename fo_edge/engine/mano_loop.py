"""Training MANO models (models.mano) with BP or with FTP's block-local losses, on the PyTorch path.

A model has three stages: ``stem`` (embedding), ``blocks`` (MANO blocks) and ``head`` (readout).
- ``bp``: autograd through the whole model; the graph of every block is alive at the backward pass.
- ``ftp``: forward-only, block-local losses: each block (the stem with block 1) learns from a loss on its own
  output with its input detached, the head from the task loss on h_L detached; each local graph is
  backpropagated and freed before the next is built, so no gradient crosses a block boundary and training
  memory does not grow with depth. The block's loss (``block_loss``):
    ``readout`` (default): block l's own small readout R_l (models.mano.BlockReadout: LayerNorm, mean over the
      points for classes, a linear map to the classes or, per point, to the field) learns with the block, on
      the task loss of R_l(block_l(h_{l-1})) (cross-entropy, or 0.5 |R_l(.) - u|^2 / B for fields): local
      learning with auxiliary readouts (Belilovsky, Eickenberg, Oyallon, "Decoupled Greedy Learning of
      CNNs", ICML 2020, arXiv 1901.08164). One pass: each block's graph is built on the previous block's
      detached output, backpropagated and freed in turn, so one map and one block's graph are alive.
    ``target``: FTP's target, forwarded. A clean pass without a graph gives h_0 = stem(x),
      h_l = block_l(h_{l-1}), y = head(h_L) and the output error e (softmax(y) - t for classes, y - u for
      fields); tau_1 = h_1 - e G^T (G: (dim, outputs) fixed random, seeded, applied per grid point: for
      classes the same e at every point, for fields the point's own error), tau_l = block_l(tau_{l-1})
      without a graph; block l learns 0.5 |block_l(h_{l-1}) - tau_l|^2 / B. Written for MLPs, it trails BP
      far on residual attention blocks (docs/MANO.md).
  Both rules use Adam.

:func:`train_mano` runs :class:`MANOStepper` under engine.loop.run_epochs, the loop every engine shares: an optional
``meter`` (accounting.mano_counts) told the phase of every pass, ``on_batch`` progress, engine.health checks of
the parameters after every step (a run that diverges raises TrainingStopped), a checkpoint every
``checkpoint_every`` steps (``w`` every parameter flat, float32; ``proj`` Adam's state flat: step counts, then
the first and second moments; ``position``, ``history``, ``counters``) and ``resume`` from one, to the same
weights on the same device and thread count (each epoch's order is drawn from (seed, epoch) alone).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..accounting.mano_counts import stage_of
from ..errors import ConfigError, RunError
from ..kernels.counters import FORWARD, MODULATED, RECOMPUTE
from ..rules.base import feedback_matrix
from .health import HealthConfig
from .loop import run_epochs
from .plan import BatchPlan

__all__ = ["MANOTrainConfig", "MANOStepper", "train_mano", "MANO_RULES", "BLOCK_LOSSES", "ftp_step", "bp_step",
           "feedback", "stage_updates", "train_options"]

MANO_RULES = ("bp", "ftp")
#: the forward-only rule's block losses (module docstring); the first is the default
BLOCK_LOSSES = ("readout", "target")


@dataclass(frozen=True)
class MANOTrainConfig:
    """rule: bp | ftp; task: classify (targets are labels) | field (targets are fields, MSE); lr: Adam's;
    g_scale: FTP's G scale (U(-1, 1) * g_scale * sqrt(6 / outputs), as rules.ftp; block_loss "target");
    block_loss: ftp's block loss (BLOCK_LOSSES, module docstring); plan: its lr milestones and gamma step Adam's
    lr per epoch (engine.plan.BatchPlan.epoch_lr)."""

    rule: str = "bp"
    task: str = "classify"
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    g_scale: float = 1.0
    block_loss: str = BLOCK_LOSSES[0]
    plan: BatchPlan = BatchPlan()

    def validate(self) -> None:
        if self.rule not in MANO_RULES:
            raise ConfigError(f"MANO trains with {' or '.join(MANO_RULES)}, not {self.rule!r}")
        if self.task not in ("classify", "field"):
            raise ConfigError(f"unknown MANO task {self.task!r}; choose classify or field")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("lr must be > 0, epochs and batch_size >= 1")
        if self.block_loss not in BLOCK_LOSSES:
            raise ConfigError(f"block_loss must be {' or '.join(BLOCK_LOSSES)}, not {self.block_loss!r}")

    @property
    def readouts(self) -> bool:
        """Whether the model trains block readouts (models.mano.BlockReadout): FTP with block_loss "readout"."""
        return self.rule == "ftp" and self.block_loss == "readout"


def train_options(rule: str, options: dict) -> dict:
    """MANOTrainConfig's fields from a run's rule options (``-o g_scale=0.5``, ``-o block_loss=target``): FTP takes
    g_scale (a number, with block_loss target) and block_loss (BLOCK_LOSSES); BP takes none. ConfigError names
    what does not fit."""
    if options and rule != "ftp":
        raise ConfigError(f"MANO's {rule} takes no rule options (ftp takes block_loss and g_scale), not "
                          f"{', '.join(sorted(options))}")
    unknown = sorted(set(options) - {"g_scale", "block_loss"})
    if unknown:
        raise ConfigError(f"MANO's ftp takes the rule options block_loss and g_scale, not {', '.join(unknown)}")
    out: dict = {}
    if "block_loss" in options:
        out["block_loss"] = str(options["block_loss"])
        if out["block_loss"] not in BLOCK_LOSSES:
            raise ConfigError(f"block_loss must be {' or '.join(BLOCK_LOSSES)}, not {out['block_loss']!r}")
    if "g_scale" in options:
        if out.get("block_loss", BLOCK_LOSSES[0]) != "target":
            raise ConfigError("g_scale scales FTP's target feedback G: it applies with -o block_loss=target only")
        try:
            out["g_scale"] = float(options["g_scale"])
        except (TypeError, ValueError):
            raise ConfigError(f"g_scale must be a number, not {options['g_scale']!r}") from None
    return out


def _task_loss(y: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    return F.cross_entropy(y, target) if task == "classify" else 0.5 * ((y - target) ** 2).sum() / len(y)


def _output_error(y: torch.Tensor, target: torch.Tensor, task: str, classes: int) -> torch.Tensor:
    """e: (B, classes) for classification, (B, H, W, 1) per point for fields."""
    if task == "classify":
        return torch.softmax(y, dim=1) - F.one_hot(target, classes).to(y.dtype)
    return (y - target)[..., None]


def _metered(meter, phase: int, batch: int, with_graph: bool = False):
    return meter.phase(phase, batch, with_graph) if meter is not None else contextlib.nullcontext()


def ftp_step(model, x: torch.Tensor, target: torch.Tensor, config: MANOTrainConfig, g: torch.Tensor,
             optimizer, meter=None) -> float:
    """One FTP step on a batch (module docstring; ``g``: G, used by block_loss "target"); returns the task loss
    of the clean pass."""
    if config.block_loss == "readout":
        return _readout_step(model, x, target, config, optimizer, meter)
    b = len(x)
    with torch.no_grad():
        with _metered(meter, FORWARD, b):
            hs = [model.stem(x)]
            for block in model.blocks:
                hs.append(block(hs[-1]))
            y = model.head(hs[-1])
        e = _output_error(y, target, config.task, g.shape[1])
        shift = (e @ g.T)[:, None, None, :] if config.task == "classify" else e @ g.T
        if meter is not None:
            rows = e.numel() // g.shape[1]
            meter.charge(MODULATED, len(model.blocks) + 2, rows * g.numel(), e.numel() + g.numel(), rows * g.shape[0])
        with _metered(meter, MODULATED, b):
            taus = [hs[1] - shift]
            for block in model.blocks[1:]:
                taus.append(block(taus[-1]))
    optimizer.zero_grad(set_to_none=True)
    with _metered(meter, RECOMPUTE, b, with_graph=True):
        for l, block in enumerate(model.blocks):
            h_in = model.stem(x) if l == 0 else hs[l]
            local = 0.5 * ((block(h_in) - taus[l]) ** 2).sum() / len(x)
            local.backward()  # frees this block's graph before the next one is built
        _task_loss(model.head(hs[-1]), target, config.task).backward()
    _step(optimizer, meter)
    return float(_task_loss(y, target, config.task))


def _readout_step(model, x: torch.Tensor, target: torch.Tensor, config: MANOTrainConfig, optimizer, meter) -> float:
    """FTP's step with block_loss "readout": one pass, block by block; block l's graph (with the stem's for
    l = 1) is built on h_{l-1} detached, its readout's task loss backpropagated and the graph freed, and its
    output, detached, is the next block's input. No parameter moves before the one optimiser step, so every
    block sees the clean pass's h_{l-1}; only the current map and one block's graph are alive."""
    if getattr(model, "readouts", None) is None:
        raise ConfigError("block_loss readout trains each block with its own readout: build the model with "
                          "readouts=True")
    optimizer.zero_grad(set_to_none=True)
    with _metered(meter, FORWARD, len(x), with_graph=True):
        h = model.stem(x)
        for block, readout in zip(model.blocks, model.readouts):
            out = block(h)
            _task_loss(readout(out), target, config.task).backward()  # frees this block's graph
            if hasattr(optimizer, "local_step"):  # a device's maps update once their block is done
                optimizer.local_step()
            h = out.detach()
        loss = _task_loss(model.head(h), target, config.task)
        loss.backward()
    _step(optimizer, meter)
    return float(loss.detach())


def bp_step(model, x: torch.Tensor, target: torch.Tensor, config: MANOTrainConfig, optimizer, meter=None) -> float:
    """One BP step: autograd through the whole model; returns the task loss."""
    optimizer.zero_grad(set_to_none=True)
    with _metered(meter, FORWARD, len(x), with_graph=True):
        loss = _task_loss(model(x), target, config.task)
    loss.backward()
    _step(optimizer, meter)
    return float(loss.detach())


def _step(optimizer, meter) -> None:
    before = meter.before_step() if meter is not None else None
    optimizer.step()
    if meter is not None:
        meter.stepped(before)


def _flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().reshape(-1).cpu().numpy().astype(np.float32) for t in tensors]) \
        if tensors else np.zeros(0, np.float32)


def _adam_state(optimizer, params) -> np.ndarray:
    """Adam's state flat: per parameter its step count, then every first moment, then every second moment
    (zeros before the first step)."""
    states = [optimizer.state.get(p, {}) for p in params]
    steps = np.array([float(s["step"]) if "step" in s else 0.0 for s in states], dtype=np.float32)
    first = _flat([s["exp_avg"] if "exp_avg" in s else torch.zeros_like(p) for s, p in zip(states, params)])
    second = _flat([s["exp_avg_sq"] if "exp_avg_sq" in s else torch.zeros_like(p) for s, p in zip(states, params)])
    return np.concatenate([steps, first, second])


def _restore(model, optimizer, resume: dict) -> None:
    """Parameters and Adam's state from a checkpoint (sizes checked)."""
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    flat, adam = resume["w"], resume["proj"]
    if flat.shape != (sum(sizes),) or adam.shape != (len(params) + 2 * sum(sizes),):
        raise RunError(f"checkpoint does not match this MANO model: w has {flat.shape} values, the model "
                       f"{sum(sizes)}")
    ends = np.cumsum([0, *sizes])
    steps, first, second = adam[:len(params)], adam[len(params):len(params) + ends[-1]], adam[len(params) + ends[-1]:]
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(torch.as_tensor(flat[ends[i]:ends[i + 1]]).reshape(p.shape))
            if steps[i] > 0:
                optimizer.state[p] = {"step": torch.tensor(float(steps[i])),
                                      "exp_avg": torch.as_tensor(first[ends[i]:ends[i + 1]]).reshape(p.shape).clone(),
                                      "exp_avg_sq": torch.as_tensor(second[ends[i]:ends[i + 1]]).reshape(p.shape).clone()}


def feedback(model, outputs: int, config: MANOTrainConfig) -> torch.Tensor:
    """FTP's G: (dim, outputs) float32, from the run's g_scale and seed (as training draws it)."""
    dim = model.blocks[0].norm1.normalized_shape[0]
    return torch.tensor(feedback_matrix((dim, outputs), outputs, config.g_scale, config.seed), dtype=torch.float32)


def stage_updates(model, x: torch.Tensor, target: torch.Tensor, config: MANOTrainConfig, outputs: int) -> list:
    """The direction ``config.rule`` would move each stage's parameters in on batch (x, target), as one flat
    float64 tensor per stage (stem, blocks, head: accounting.mano_counts.stage_of): the gradients its step forms
    (FTP: the block-local losses and the head's task loss; BP: autograd through the model), taken before any
    optimiser sees them; the block readouts' own parameters are left out. The parameters are left as they
    were."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # zero_grad only: a zero step moves nothing
    if config.rule == "ftp":
        ftp_step(model, x, target, config, feedback(model, outputs, config), optimizer)
    else:
        bp_step(model, x, target, config, optimizer)
    depth = len(model.blocks)
    stages = [[] for _ in range(depth + 2)]
    for name, p in model.named_parameters():
        if name.startswith("readouts."):  # training scaffolding, outside the model's function: BP has none
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        stages[stage_of(name, depth)].append(grad.detach().reshape(-1).to(torch.float64))
    model.zero_grad(set_to_none=True)
    return [torch.cat(parts) for parts in stages]


def _stage_weights(model, depth: int) -> list[np.ndarray]:
    """Every stage's parameters flat (stem, blocks, head: accounting.mano_counts.stage_of), for the health checks."""
    stages = [[] for _ in range(depth + 2)]
    for name, p in model.named_parameters():
        stages[stage_of(name, depth)].append(p)
    return [_flat(ps) for ps in stages]


def train_mano(model: torch.nn.Module, x_train: np.ndarray, y_train: np.ndarray, config: MANOTrainConfig,
               evaluate: Callable[[torch.nn.Module], float], outputs: int,
               on_epoch: Callable[[dict], None] | None = None, *, meter=None,
               on_batch: Callable[[int], None] | None = None, health: HealthConfig | None = None,
               checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
               resume: dict | None = None, metric: str = "test_metric", device=None) -> list[dict]:
    """Train ``model`` in place on (x_train, y_train) (labels (N,) or fields (N, n, n)); ``evaluate(model)`` gives
    the epoch's test metric, recorded under ``metric``; ``outputs`` is the classes or 1 (G's width). Returns
    per-epoch records; the lifecycle keywords are the module docstring's (a resumed epoch's train_loss averages
    the steps after the resume). A health stop raises TrainingStopped whose outcome is the history so far. The
    epochs, batches, health checks (``health`` None: the default thresholds) and checkpoints are engine.loop's;
    :class:`MANOStepper` is the step. ``device``: a rules.mano_device_training.DeviceTraining the model is entered
    in (its linear maps on a device's kernels): its SGD replaces Adam, and its stores go into checkpoints."""
    config.validate()
    stepper = MANOStepper(model, x_train, y_train, config, evaluate, outputs, meter=meter, metric=metric,
                          device=device)
    return run_epochs(stepper, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                      plan=config.plan, on_batch=on_batch, health=health or HealthConfig(),
                      checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint, resume=resume,
                      on_epoch=on_epoch)


class MANOStepper:
    """A MANO model's step (engine.loop.Stepper): Adam's lr (or the device's SGD's) set per epoch from the plan, then
    BP's or FTP's step on each batch; the health monitor sees every stage's parameters (stem, blocks, head)."""

    def __init__(self, model: torch.nn.Module, x_train: np.ndarray, y_train: np.ndarray, config: MANOTrainConfig,
                 evaluate: Callable[[torch.nn.Module], float], outputs: int, *, meter, metric: str, device=None):
        torch.manual_seed(config.seed)
        self.model, self.x_train, self.y_train, self.config = model, x_train, y_train, config
        self.evaluate_model, self.meter, self.metric = evaluate, meter, metric
        self.device = device
        self.optimizer = device.optimizer() if device is not None else torch.optim.Adam(model.parameters(),
                                                                                        lr=config.lr)
        self.g = feedback(model, outputs, config)
        self.depth = len(model.blocks)
        self.n_train, self.n_monitored = len(x_train), self.depth + 2
        self.losses: list[float] = []

    def start_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.plan.epoch_lr(self.config.lr, epoch)
        self.losses = []
        self.model.train()

    def step(self, idx: np.ndarray, epoch: int, step: int) -> None:
        x, target = torch.as_tensor(self.x_train[idx]), torch.as_tensor(self.y_train[idx])
        if self.config.rule == "ftp":
            self.losses.append(ftp_step(self.model, x, target, self.config, self.g, self.optimizer, self.meter))
        else:
            self.losses.append(bp_step(self.model, x, target, self.config, self.optimizer, self.meter))
        if self.meter is not None:
            self.meter.trained += len(idx)

    def health(self) -> tuple[None, list]:
        return None, _stage_weights(self.model, self.depth)

    def evaluate(self, epoch: int) -> dict:
        self.model.eval()
        value = self.evaluate_model(self.model)  # charges its own passes to the meter's inference phase, if any
        return {"train_loss": float(np.mean(self.losses)) if self.losses else None, self.metric: value}

    def state(self) -> dict:
        params = list(self.model.parameters())
        meter = self.meter
        device = self.device.checkpoint_state() if self.device is not None else {}  # its rng replaces the zero
        return {"w": _flat(params), "proj": _adam_state(self.optimizer, params), "rng": np.zeros(1, np.uint64),
                "counters": meter.counters.copy() if meter is not None else np.zeros(0, np.int64), **device}

    def tallies(self) -> tuple[int, int]:
        return (self.meter.trained, self.meter.inferred) if self.meter is not None else (0, 0)

    def restore(self, resume: dict) -> None:
        _restore(self.model, self.optimizer, resume)
        if self.device is not None:
            self.device.restore(resume)
        if self.meter is not None and resume["counters"].size:
            self.meter.restore(resume["counters"].reshape(self.meter.counters.shape),
                               *(int(v) for v in resume["position"][3:5]))

    def outcome(self, history: list[dict], warnings: list[str]) -> list[dict]:
        return history
