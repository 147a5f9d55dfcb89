"""The one reader of device profile files (``devices/<id>.toml``, or a user's path).

Every number in a profile is a table ``{ value = ..., source = "..." }``: the source is data, so reports can
print it and tests can require it. Unknown keys are refused with a "did you mean", and every problem is one
:class:`DeviceProfileError` naming the file, the key and what was expected.
"""
from __future__ import annotations

import difflib
import enum
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DeviceProfileError
from ..files import TEXT_FILE_BYTES, read_bounded
from .spec import (LOIHI_MAX_WEIGHT_BITS, AnalogParams, Arithmetic, Capacity, DeviceProfile, LoihiWeightFormat,
                   InputCode, NumberFormat, Overflow, Rounding, SignMode, SpikingParams, WeightScale)

__all__ = ["load_device", "list_devices", "parse_device", "device_text", "FORMAT_KEYS", "NEURONS"]

_TOP = {"id": str, "name": str, "arithmetic": Arithmetic, "forward_rounding": Rounding,
        "update_rounding": Rounding, "accumulator_overflow": Overflow, "weight_scale": WeightScale,
        "formats": dict, "capacity": dict, "energy": dict, "analog": dict, "neuron": str, "spiking": dict}
_REQUIRED_TOP = ("id", "name", "arithmetic", "forward_rounding", "update_rounding", "accumulator_overflow",
                 "formats", "capacity", "energy")
# key -> (type, minimum, maximum)
_FORMATS = {"weight_bits": (int, 1, 32), "weight_frac_bits": (int, 0, 62),
            "activation_bits": (int, 1, 32), "activation_frac_bits": (int, 0, 62),
            "error_bits": (int, 1, 32), "error_frac_bits": (int, 0, 62),
            "accumulator_bits": (int, 8, 64)}
#: the [formats] keys a profile has (sweeps override them)
FORMAT_KEYS = tuple(_FORMATS)
_CAPACITY = {"sram_bytes": (int, 0, 2**50), "flash_bytes": (int, 0, 2**50)}
_ENERGY_KEYS = ("mac_pj", "system_mac_pj", "ac_pj", "sram_byte_pj", "dram_byte_pj", "flash_byte_pj", "weight_write_pj",
                "synop_pj", "syn_update_pj", "neuron_active_pj", "neuron_inactive_pj", "spike_pj",
                "adc_pj", "dac_pj", "pulse_pj", "cell_mac_pj", "static_mw")
_ANALOG = {"levels": (int, 2, 1 << 20), "w_min": (float, -1e3, 1e3), "w_max": (float, -1e3, 1e3),
           "asymmetry": (float, -0.99, 0.99), "c2c_noise": (float, 0.0, 10.0), "read_noise": (float, 0.0, 10.0),
           "out_bound": (float, 1e-6, 1e6), "adc_bits": (int, 1, 32), "dac_bits": (int, 1, 32),
           "max_pulses": (int, 1, 1 << 16)}


#: spiking neuron models (``neuron = ...``) and their [spiking] table
NEURONS = ("loihi-cuba",)
_SPIKING = {"du": (int, 0, 4095), "dv": (int, 0, 4095), "threshold": (float, 1e-6, 1e6),
            "timesteps": (int, 1, 4096), "delay": (int, 0, 1), "neurons_per_core": (int, 1, 1 << 24),
            "synapse_bytes_per_core": (int, 1, 1 << 40), "cores_per_chip": (int, 1, 1 << 20),
            "synop_ns": (float, 0.0, 1e9), "syn_update_ns": (float, 0.0, 1e9), "neuron_active_ns": (float, 0.0, 1e9),
            "neuron_inactive_ns": (float, 0.0, 1e9), "barrier_ns": (float, 0.0, 1e12)}
#: the Dense weight format in [spiking] (optional; Lava's Dense defaults: 8 bits, mixed sign, exponent 0)
_WEIGHT_FORMAT = {"num_weight_bits": (int, 1, LOIHI_MAX_WEIGHT_BITS), "weight_exp": (int, -8, 7)}
#: optional [spiking] numbers with defaults (0 occupied cores: fo-edge's tight packing)
_SPIKING_OPTIONAL = {"occupied_cores": (int, 0, 1 << 20)}


def list_devices() -> list[str]:
    """Ids of the bundled profiles, sorted."""
    folder = resources.files("fo_edge") / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def device_text(name_or_path: str) -> tuple[str, str]:
    """(TOML text, origin) of a bundled profile by id or of a profile file by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        try:
            return read_bounded(path, TEXT_FILE_BYTES, "device file", DeviceProfileError).decode("utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise DeviceProfileError(f"cannot read device file {path}: {exc}") from None
    bundled = resources.files("fo_edge") / "profiles" / f"{name_or_path}.toml"
    if not bundled.is_file():
        raise DeviceProfileError(f"unknown device {name_or_path!r}; choose one of {', '.join(list_devices())} "
                                 f"or pass a path to a .toml profile")
    return bundled.read_text(encoding="utf-8"), f"devices/{name_or_path}.toml"


def load_device(name_or_path: str) -> DeviceProfile:
    """A bundled profile by id (``loihi-like``) or a profile file by path (anything ending in .toml)."""
    return parse_device(*device_text(name_or_path))


def _fail(origin: str, key: str, expected: str, got: Any = None) -> DeviceProfileError:
    got_text = "" if got is None else f", got {got!r}"
    return DeviceProfileError(f"{origin}: {key}: expected {expected}{got_text}")


def _unknown(origin: str, section: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DeviceProfileError(f"{origin}: {section}{key}: unknown key{hint}")


def _number(origin: str, where: str, raw: Any, kind: type, lo: float, hi: float, sources: dict) -> int | float:
    if not isinstance(raw, dict) or set(raw) != {"value", "source"}:
        raise _fail(origin, where, '{ value = <number>, source = "<citation>" }', raw)
    value, source = raw["value"], raw["source"]
    if not isinstance(source, str) or not source.strip():
        raise _fail(origin, where + ".source", "a non-empty citation string", source)
    ok = isinstance(value, int) and not isinstance(value, bool) if kind is int else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise _fail(origin, where + ".value", f"{'an integer' if kind is int else 'a number'}", value)
    if not lo <= value <= hi:
        raise _fail(origin, where + ".value", f"a value in [{lo}, {hi}]", value)
    sources[where] = source
    return kind(value)


def _section(origin: str, data: dict, name: str, schema: dict, sources: dict, required=True) -> dict:
    table = data.get(name, {})
    _unknown(origin, f"[{name}] ", table, schema)
    out = {}
    for key, (kind, lo, hi) in schema.items():
        if key not in table:
            if required:
                raise _fail(origin, f"[{name}] {key}", "this key (missing)")
            continue
        out[key] = _number(origin, f"{name}.{key}", table[key], kind, lo, hi, sources)
    return out


def _enum(origin: str, data: dict, key: str, kind: type):
    raw = data[key]
    try:
        return kind(raw)
    except ValueError:
        raise _fail(origin, key, "one of " + ", ".join(repr(m.value) for m in kind), raw) from None


def parse_device(text: str, origin: str = "<device>") -> DeviceProfile:
    """Parse and validate TOML text into a :class:`DeviceProfile` (errors name ``origin``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeviceProfileError(f"{origin}: not valid TOML: {exc}") from None
    _unknown(origin, "", data, _TOP)
    for key in _REQUIRED_TOP:
        if key not in data:
            raise _fail(origin, key, "this key (missing)")
    for key in ("id", "name"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise _fail(origin, key, "a non-empty string", data[key])
    for key in ("formats", "capacity", "energy", "analog", "spiking"):
        if key in data and not isinstance(data[key], dict):
            raise _fail(origin, key, "a table", data[key])
    arithmetic = _enum(origin, data, "arithmetic", Arithmetic)
    sources: dict[str, str] = {}
    fmt = _section(origin, data, "formats", _FORMATS, sources)
    for kind in ("weight", "activation", "error"):
        if fmt[f"{kind}_frac_bits"] > 2 * fmt[f"{kind}_bits"]:
            raise _fail(origin, f"[formats] {kind}_frac_bits", f"at most 2 x {kind}_bits",
                        fmt[f"{kind}_frac_bits"])
    cap = _section(origin, data, "capacity", _CAPACITY, sources)
    energy = _section(origin, data, "energy", {k: (float, 0.0, 1e12) for k in _ENERGY_KEYS}, sources,
                      required=False)
    analog = None
    if arithmetic is Arithmetic.ANALOG:
        if "analog" not in data:
            raise _fail(origin, "analog", "an [analog] table for arithmetic = 'analog'")
        analog = AnalogParams(**_section(origin, data, "analog", _ANALOG, sources))
        if not analog.w_min < 0.0 < analog.w_max:
            raise _fail(origin, "[analog] w_min/w_max", "w_min < 0 < w_max (soft bounds on a differential pair)",
                        (analog.w_min, analog.w_max))
    elif "analog" in data:
        raise _fail(origin, "analog", "no [analog] table unless arithmetic = 'analog'")
    spiking = _spiking(origin, data, arithmetic, sources)
    is_float = arithmetic is Arithmetic.FLOAT

    def number_format(kind: str) -> NumberFormat:
        return NumberFormat(fmt[f"{kind}_bits"], fmt[f"{kind}_frac_bits"], float_format=is_float)

    if is_float and fmt["weight_bits"] != 32:
        raise _fail(origin, "[formats] weight_bits", "32 for arithmetic = 'float'", fmt["weight_bits"])
    weight_scale = _enum(origin, data, "weight_scale", WeightScale) if "weight_scale" in data \
        else WeightScale.PER_LAYER
    if weight_scale.per_channel and (arithmetic is not Arithmetic.FIXED or spiking is not None):
        raise _fail(origin, "weight_scale", "'per-layer' unless arithmetic = 'fixed' without a spiking neuron "
                    "(per-channel scales are fixed-point requantisation; Loihi's Dense has one weight_exp)",
                    weight_scale.value)
    return DeviceProfile(
        id=data["id"], name=data["name"], arithmetic=arithmetic,
        weight=number_format("weight"), activation=number_format("activation"), error=number_format("error"),
        accumulator_bits=fmt["accumulator_bits"],
        forward_rounding=_enum(origin, data, "forward_rounding", Rounding),
        update_rounding=_enum(origin, data, "update_rounding", Rounding),
        accumulator_overflow=_enum(origin, data, "accumulator_overflow", Overflow),
        capacity=Capacity(**cap), energy_pj=energy, analog=analog, spiking=spiking, weight_scale=weight_scale,
        sources=sources,
        path=origin)


def _spiking(origin: str, data: dict, arithmetic: Arithmetic, sources: dict) -> SpikingParams | None:
    """The [spiking] table of a profile with ``neuron = "loihi-cuba"`` (fixed arithmetic), else None."""
    if "neuron" not in data:
        if "spiking" in data:
            raise _fail(origin, "spiking", "no [spiking] table without neuron = 'loihi-cuba'")
        return None
    if data["neuron"] not in NEURONS:
        raise _fail(origin, "neuron", "one of " + ", ".join(repr(n) for n in NEURONS), data["neuron"])
    if arithmetic is not Arithmetic.FIXED:
        raise _fail(origin, "neuron", "arithmetic = 'fixed' for a loihi-cuba neuron", arithmetic.value)
    if "spiking" not in data:
        raise _fail(origin, "spiking", "a [spiking] table for neuron = 'loihi-cuba'")
    table = dict(data["spiking"])
    _unknown(origin, "[spiking] ", table, {**_SPIKING, **_WEIGHT_FORMAT, **_SPIKING_OPTIONAL,
                                           "sign_mode": None, "input_code": None})
    weight_bits = data["formats"].get("weight_bits", {}).get("value") if isinstance(data["formats"], dict) else None
    if weight_bits != LOIHI_MAX_WEIGHT_BITS + 1:
        raise _fail(origin, "[formats] weight_bits", f"{LOIHI_MAX_WEIGHT_BITS + 1} for a loihi-cuba neuron (Loihi's "
                    "9-bit signed weight register; set the precision with [spiking] num_weight_bits and sign_mode)",
                    weight_bits)
    fmt = _section(origin, {"spiking": {k: table.pop(k) for k in list(table) if k in _WEIGHT_FORMAT}}, "spiking",
                   _WEIGHT_FORMAT, sources, required=False)
    sign = table.pop("sign_mode", None)
    if sign is not None:
        fmt["sign_mode"] = _choice(origin, "sign_mode", sign, SignMode, sources)
    weights = LoihiWeightFormat(**fmt)
    if weights.grid_hi == 0 and weights.sign_mode is SignMode.MIXED:
        raise _fail(origin, "[spiking] num_weight_bits", "at least 2 with sign_mode = 'mixed' (1 bit leaves only "
                    "the weights -256 and 0)", weights.num_weight_bits)
    extra = _section(origin, {"spiking": {k: table.pop(k) for k in list(table) if k in _SPIKING_OPTIONAL}},
                     "spiking", _SPIKING_OPTIONAL, sources, required=False)
    code = table.pop("input_code", None)
    if code is not None:
        extra["input_code"] = _choice(origin, "input_code", code, InputCode, sources)
    return SpikingParams(**_section(origin, {"spiking": table}, "spiking", _SPIKING, sources), weights=weights,
                         **extra)


def _choice(origin: str, key: str, raw: Any, kind: type[enum.Enum], sources: dict):
    """[spiking] KEY = { value = "<one of kind's values>", source = "..." } -> the enum member."""
    where = f"spiking.{key}"
    first = next(iter(kind)).value
    if not isinstance(raw, dict) or set(raw) != {"value", "source"}:
        raise _fail(origin, where, f'{{ value = "{first}", source = "<citation>" }}', raw)
    if not isinstance(raw["source"], str) or not raw["source"].strip():
        raise _fail(origin, where + ".source", "a non-empty citation string", raw["source"])
    try:
        member = kind(raw["value"])
    except ValueError:
        raise _fail(origin, where + ".value", "one of " + ", ".join(repr(m.value) for m in kind),
                    raw["value"]) from None
    sources[where] = raw["source"]
    return member
