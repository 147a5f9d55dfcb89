"""engine.loop, the one training loop: batches in order, checkpoints at the right positions, resume continuing
at the checkpoint's batch, health stops carrying the outcome; and no engine keeps a loop of its own."""
import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fo_edge.engine.health import HealthConfig, NumericHealthError, TrainingStopped
from fo_edge.engine.loop import run_epochs
from fo_edge.engine.plan import BatchPlan, epoch_order


class Recorder:
    """A stepper whose 'weights' are the running sum of the sample indices it saw: any batch skipped, repeated
    or reordered changes them."""

    def __init__(self, n: int, fail_at: int | None = None, raise_at: int | None = None):
        self.n_train, self.n_monitored = n, 1
        self.w, self.seen, self.trained, self.inferred = 0.0, [], 0, 0
        self.fail_at, self.raise_at = fail_at, raise_at

    def start_epoch(self, epoch):
        self.epoch_seen = 0

    def step(self, idx, epoch, step):
        if step == self.raise_at:
            raise NumericHealthError("from the step", 1, step + 1, "non-finite")
        self.seen.append((epoch, step, tuple(int(i) for i in idx)))
        self.w = self.w * 1.0001 + float(np.sum(idx)) + step
        self.trained += len(idx)

    def health(self):
        bad = self.fail_at is not None and len(self.seen) >= self.fail_at
        return None, [np.array([np.inf if bad else self.w])]

    def evaluate(self, epoch):
        self.inferred += 3
        return {"test_accuracy": self.w}

    def state(self):
        return {"w": np.array([self.w])}

    def tallies(self):
        return self.trained, self.inferred

    def restore(self, state):
        self.w = float(state["w"][0])
        self.trained, self.inferred = (int(v) for v in state["position"][3:5])

    def outcome(self, history, warnings):
        return self.w, history, warnings


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 9), epochs=st.integers(1, 3), every=st.integers(1, 5),
       drop_last=st.booleans(), pick=st.integers(0, 1000))
def test_batches_checkpoints_and_resume(n, batch, epochs, every, drop_last, pick):
    """Every epoch takes plan.starts' batches of epoch_order; a run resumed from any of its checkpoints ends with
    the uninterrupted run's weights, history (but timings), tallies and the same later batches."""
    plan = BatchPlan(drop_last=drop_last)
    states: list[dict] = []
    full = Recorder(n)
    w, history, _ = run_epochs(full, epochs=epochs, batch_size=batch, seed=3, plan=plan, checkpoint_every=every,
                               on_checkpoint=states.append)
    expected = [(e, tuple(int(i) for i in epoch_order(n, 3, e)[b:b + batch])) for e in range(epochs)
                for b in plan.starts(n, batch)]
    assert [(e, idx) for e, _, idx in full.seen] == expected
    assert [s for _, s, _ in full.seen] == list(range(len(expected)))
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    assert history[-1]["steps"] == len(expected) and full.inferred == 3 * epochs
    middle = states[pick % len(states)]
    resumed = Recorder(n)
    w2, history2, _ = run_epochs(resumed, epochs=epochs, batch_size=batch, seed=3, plan=plan, resume=middle)
    done = int(middle["position"][2])
    assert w2 == w and resumed.seen == full.seen[done:]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history2] == \
        [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history]
    assert resumed.tallies() == full.tallies()


def test_health_stop_carries_the_outcome():
    stepper = Recorder(20, fail_at=3)
    with pytest.raises(TrainingStopped) as stop:
        run_epochs(stepper, epochs=2, batch_size=4, seed=0, health=HealthConfig())
    assert stop.value.error.step == 3 and stop.value.error.kind == "nonfinite"
    w, history, warnings = stop.value.outcome
    assert w == stepper.w and history == [] and len(stepper.seen) == 3


def test_warn_goes_on_and_records_the_warning():
    stepper = Recorder(20, fail_at=3)
    _, history, warnings = run_epochs(stepper, epochs=1, batch_size=4, seed=0, health=HealthConfig(action="warn"))
    assert len(history) == 1 and stepper.seen[-1][1] == 4  # every batch ran
    assert [w.split("]")[0] for w in warnings] == ["[nonfinite", "[exploding"]


def test_a_step_that_raises_a_health_error_stops_without_a_monitor():
    """A step's own NumericHealthError (the float spiking path's non-finite check) stops the run even when no
    monitor was asked for, with the outcome so far."""
    stepper = Recorder(20, raise_at=2)
    with pytest.raises(TrainingStopped) as stop:
        run_epochs(stepper, epochs=1, batch_size=4, seed=0)
    assert str(stop.value) == "from the step" and stop.value.outcome[1] == [] and len(stepper.seen) == 2


def test_progress_and_per_epoch_callbacks():
    batches, epochs = [], []
    run_epochs(Recorder(10), epochs=2, batch_size=4, seed=0, on_batch=batches.append, on_epoch=epochs.append)
    assert batches == [4, 4, 2] * 2 and [r["epoch"] for r in epochs] == [1, 2]


ENGINES = ("stream.py", "torch_loop.py", "spiking_torch.py", "conv_loop.py", "mano_loop.py")


@pytest.mark.parametrize("name", ENGINES)
def test_no_engine_keeps_a_loop_of_its_own(name):
    """Only engine.loop draws epochs, builds a health monitor or calls on_checkpoint: each engine is a stepper
    that run_epochs drives (so a guarantee added to the loop reaches every family)."""
    source = (Path(__file__).resolve().parents[1] / "fo_edge" / "engine" / name).read_text()
    called = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
              for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)}
    assert not called & {"epoch_order", "HealthMonitor", "on_checkpoint", "starts"}, name
    assert "run_epochs" in called, name
