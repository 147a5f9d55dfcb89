"""The schemas of what fo-edge reads back: ``run.json`` (energy-report, export, diagnose, --resume), checked field
by field with pydantic on load, and a checkpoint's arrays (--resume; ``validate_checkpoint``): a missing or
mistyped field is one line naming the file and the field, never a KeyError or TypeError later. Only the fields
readers use are typed (strictly: a string is not a number); anything else a record holds is kept as it is.
"""
from __future__ import annotations

import json
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["RunRecord", "validate_record", "validate_checkpoint", "CHECKPOINT_REQUIRED"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Config(_Strict):
    rule: str
    device: str
    model: str
    dims: list[int] = Field(min_length=2)
    activation: Optional[str] = None
    dataset: str
    data_dir: Optional[str] = None
    limit: Optional[int] = None


class _Device(_Strict):
    id: str


class _Final(_Strict):
    test_accuracy: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    seconds: Optional[float] = None
    best_test_accuracy: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    best_epoch: Optional[int] = None
    samples_per_s: Optional[float] = None
    relative_l2: Optional[float] = Field(default=None, ge=0.0)


class _Epoch(_Strict):
    epoch: int
    test_accuracy: Optional[float] = Field(default=None, ge=0.0, le=1.0)  # None: a field task (MANO on Darcy)
    test_relative_l2: Optional[float] = Field(default=None, ge=0.0)


class _Memory(_Strict):
    peak_bytes: Optional[int] = None
    capacity_bytes: Optional[int] = None


class _Counters(_Strict):
    names: Optional[list[str]] = None
    phases: Optional[list[str]] = None
    layers: Optional[list[str]] = None
    values: Optional[list[list[list[int]]]] = None
    totals: Optional[dict[str, int]] = None
    training_samples: Optional[int] = None
    inference_samples: Optional[int] = None


class _EnergyMode(_Strict):
    per_training_sample_pj: Optional[float] = None
    per_inference_sample_pj: Optional[float] = None
    per_training_sample_by_phase_pj: dict[str, Optional[float]] = {}
    by_layer_pj: dict[str, float] = {}


class _Static(_Strict):
    per_training_sample_pj: Optional[float] = None
    per_inference_sample_pj: Optional[float] = None
    training_s: float
    inference_s: float
    cores_used: int
    cores_charged: Optional[int] = None


class _Energy(_Strict):
    primary: str
    modes: dict[str, _EnergyMode]
    static: Optional[_Static] = None


class RunRecord(_Strict):
    """What a run.json must hold for fo-edge to read it back."""

    schema_version: int
    status: str
    run_id: Optional[str] = None
    config: _Config
    device: _Device
    final: _Final
    history: list[_Epoch] = []
    memory: _Memory
    counters: _Counters
    energy: Optional[_Energy] = None


def validate_record(data: object, origin: str, error) -> None:
    """Raise ``error`` (one line: ``origin: field.path: what is wrong``) unless ``data`` fits RunRecord."""
    try:
        RunRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        raise error(f"{origin}: {where}: {first['msg'].lower()} (got {first.get('input')!r:.60})") from None


#: a checkpoint's arrays: name -> (dtype kinds allowed, number of dimensions; None: any)
CHECKPOINT_ARRAYS = {"w": ("fiu", 1), "rng": ("u", 1), "counters": ("i", None), "proj": ("fi", None),
                     "position": ("i", 1), "history": ("U", 0), "velocity": ("fi", 1), "w_exp": ("i", 1),
                     "device_w": ("fi", 1),  # a conv or MANO run's device store beside its host parameters (w)
                     "run_id": ("U", 0),
                     "config_sha": ("U", 0), "w_sha": ("U", 0)}
CHECKPOINT_REQUIRED = ("w", "rng", "counters", "proj", "position", "history")


class _History(_Strict):
    epochs: list[_Epoch]


def validate_checkpoint(state: dict, origin: str, error) -> None:
    """Raise ``error`` (one line naming ``origin`` and the array) unless ``state`` (name -> array, as np.load
    gives it) is a training checkpoint: the required arrays present, each of its dtype kind and rank, no
    unknown arrays, ``position`` five counts >= 0 and ``history`` a JSON list of {epoch, test_accuracy}."""
    missing = [k for k in CHECKPOINT_REQUIRED if k not in state]
    if missing:
        raise error(f"{origin}: not a training checkpoint (missing {', '.join(missing)})")
    for name, array in state.items():
        if name not in CHECKPOINT_ARRAYS:
            raise error(f"{origin}: {name}: unknown array in a checkpoint")
        kinds, ndim = CHECKPOINT_ARRAYS[name]
        if array.dtype.kind not in kinds or (ndim is not None and array.ndim != ndim):
            raise error(f"{origin}: {name}: expected dtype kind {kinds!r} with {ndim} dimensions, got "
                        f"{array.dtype} {array.shape}")
    position = state["position"]
    if position.shape != (5,) or (position < 0).any():
        raise error(f"{origin}: position: expected 5 counts >= 0 (epoch, begin, step, trained, inferred), got "
                    f"{position.tolist()!r:.60}")
    try:
        history = json.loads(str(state["history"]))
    except ValueError as exc:
        raise error(f"{origin}: history: not JSON ({exc})") from None
    try:
        _History.model_validate({"epochs": history})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "history"
        raise error(f"{origin}: history.{where}: {first['msg'].lower()}") from None
