"""The schema of ``run.json`` as fo-edge reads it back (energy-report, export, diagnose, --resume), checked field
by field with pydantic on load: a missing or mistyped field is one line naming the file and the field, never a
KeyError or TypeError later. Only the fields readers use are typed (strictly: a string is not a number);
anything else a record holds is kept as it is.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["RunRecord", "validate_record"]


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


class _Epoch(_Strict):
    epoch: int
    test_accuracy: float = Field(ge=0.0, le=1.0)


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
