"""Run directories: the ``run.json`` schema, atomic writes, and weight checkpoints (npz, never pickle).

A run directory holds ``run.json`` (config, per-epoch metrics, memory, counters, energy, package versions,
seed), ``weights.npz`` (``W0 .. W{L-1}`` as stored on the device: float32, or integer mantissas with their
``exp{l}`` power-of-two exponents) and ``device.toml`` (the profile the run used, byte for byte: its formats
and rounding are the quantisation parameters of the mantissas). Checkpoints are read with pickles refused.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .device import DeviceProfile, parse_device
from .errors import RunError
from .files import TEXT_FILE_BYTES, npz_members, read_bounded
from .run_schema import CHECKPOINT_REQUIRED, validate_checkpoint, validate_record

__all__ = ["SCHEMA_VERSION", "prepare_run_dir", "write_json_atomic", "write_file_atomic", "read_run",
           "save_weights", "load_weights", "save_checkpoint", "load_checkpoint", "package_versions",
           "MAX_CHECKPOINT_BYTES", "CHECKPOINT_KEYS", "TrainedRun", "load_trained", "load_conv_weights", "real_weights",
           "run_status_note", "load_state_weights"]

#: refuse checkpoints larger than this before reading them (4 GiB)
MAX_CHECKPOINT_BYTES = 4 << 30

#: 2: counters per phase and layer, energy record, device energy table and capacity
SCHEMA_VERSION = 2


#: the files that make a directory a run's (a directory holding any of them belongs to that run)
RUN_FILES = ("run.json", "weights.npz", "checkpoint.npz", "device.toml")


def prepare_run_dir(path: str | Path, existing: str = "refuse") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file), before any work starts.

    A directory that already holds a run (RUN_FILES) belongs to it: ``existing="refuse"`` raises RunError naming
    it, ``"replace"`` removes its run files first (``--overwrite``), ``"resume"`` keeps them (``--resume``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} exists and is not a directory; choose another path")
    held = [name for name in RUN_FILES if (path / name).exists()] if path.is_dir() else []
    if held and existing == "refuse":
        raise RunError(f"--out {path} holds another run ({_describe(path)}); pass --overwrite to replace it, "
                       f"--resume {path} to continue it, or choose another directory")
    if held and existing == "replace":
        for name in held:
            (path / name).unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise RunError(f"--out {path} is not writable ({exc.strerror or exc}); choose a writable directory") \
            from None
    return path


def _describe(path: Path) -> str:
    """'status, rule on device' of the run in ``path``, as far as its run.json says."""
    try:
        record = json.loads((path / "run.json").read_text(encoding="utf-8"))
        config = record.get("config", {})
        return f"{record.get('status', 'unknown status')}: {config.get('rule', '?')} on {config.get('device', '?')}"
    except (OSError, ValueError, AttributeError):
        return "its files, without a readable run.json"


def write_file_atomic(path: str | Path, write) -> None:
    """Call ``write(binary_handle)`` on a temp file beside ``path``, then rename it over ``path``."""
    _atomic_write(Path(path), write)


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # mkstemp's 0600, widened to what open() would give
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"cannot write {path} ({exc.strerror or exc}); earlier results are untouched") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, obj: dict) -> None:
    """Serialise ``obj`` as indented JSON to ``path`` atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    _atomic_write(Path(path), lambda handle: handle.write(data))


def save_weights(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Save named arrays to an .npz file atomically (no pickled objects: only plain numeric arrays)."""
    _atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz with pickles refused; damage, pickled objects or members that would unpack to
    more than MAX_CHECKPOINT_BYTES raise RunError (files.npz_members reads the headers before any array)."""
    npz_members(path, MAX_CHECKPOINT_BYTES, RunError)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise RunError(f"{path} contains pickled objects; fo-edge never loads pickles") from None
        raise RunError(f"{path} is not a valid checkpoint ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise RunError(f"{path} is truncated or not an npz checkpoint ({exc})") from None


def _read_weights(run_dir: str | Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(path, arrays) of ``RUN_DIR/weights.npz``: a missing or oversized file, pickles or damage raise RunError."""
    path = Path(run_dir) / "weights.npz"
    try:
        size = path.stat().st_size
    except OSError:
        raise RunError(f"{run_dir} has no weights.npz; re-run the simulation") from None
    if size > MAX_CHECKPOINT_BYTES:
        raise RunError(f"{path} is {size} bytes, larger than any fo-edge checkpoint; refusing to read it")
    return path, _read_npz(path)


def load_weights(run_dir: str | Path, dims: list[int]) -> dict[str, np.ndarray]:
    """The arrays of ``RUN_DIR/weights.npz``, checked against ``dims`` (W{l}: (d_{l+1}, d_l) float32 or int32,
    exp{l}: int32 scalars, or (d_{l+1},) int32 per-row exponents of per-channel scales). Pickled objects,
    truncated or foreign files and wrong shapes raise RunError."""
    path, out = _read_weights(run_dir)
    n = len(dims) - 1
    for l in range(n):
        w = out.get(f"W{l}")
        shape = (int(dims[l + 1]), int(dims[l]))
        if w is None or w.shape != shape or w.dtype not in (np.float32, np.int32):
            got = None if w is None else f"{w.dtype} {w.shape}"
            raise RunError(f"{path}: W{l} should be float32 or int32 of shape {shape}, got {got}")
        exp = out.get(f"exp{l}")
        if exp is not None and (exp.shape not in ((), (shape[0],)) or exp.dtype != np.int32):
            raise RunError(f"{path}: exp{l} should be an int32 scalar or {shape[0]} per-row int32 exponents")
    extra = set(out) - {f"W{l}" for l in range(n)} - {f"exp{l}" for l in range(n)}
    if extra:
        raise RunError(f"{path}: unexpected arrays {sorted(extra)}")
    return out


#: arrays a training checkpoint holds (engine.stream's state)
CHECKPOINT_KEYS = CHECKPOINT_REQUIRED


def save_checkpoint(run_dir: str | Path, state: dict[str, np.ndarray]) -> None:
    """Write ``RUN_DIR/checkpoint.npz`` atomically (plain arrays only; the history is a JSON string)."""
    save_weights(Path(run_dir) / "checkpoint.npz", state)


def load_checkpoint(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``RUN_DIR/checkpoint.npz`` (None if there is none); pickles and damage raise RunError."""
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        return None
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise RunError(f"{path} is larger than any fo-edge checkpoint; refusing to read it")
    state = _read_npz(path)
    validate_checkpoint(state, str(path), RunError)
    return state


def read_run(run_dir: str | Path) -> dict:
    """Read and check a run's ``run.json``."""
    path = Path(run_dir) / "run.json"
    if not os.path.lexists(path):
        raise RunError(f"{run_dir} is not a run directory (no run.json)")
    try:
        data = json.loads(read_bounded(path, TEXT_FILE_BYTES, "run.json", RunError).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable or corrupt: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise RunError(f"{path} has schema_version {found}, this fo-edge reads {SCHEMA_VERSION}: re-run it with "
                       f"this version")
    for key in ("config", "device", "final", "memory", "counters"):
        if not isinstance(data.get(key), dict):
            raise RunError(f"{path} is corrupt: {key!r} is missing or not an object")
    validate_record(data, f"{path} is corrupt", RunError)
    return data


@dataclass
class TrainedRun:
    """A run directory read back: its record, the device it ran on, the stored arrays and the model."""

    path: Path
    record: dict
    profile: DeviceProfile
    stored: dict[str, np.ndarray]
    dims: list[int]
    activation: str


def load_trained(run_dir: str | Path, spiking: bool = False, conv: bool = False) -> TrainedRun:
    """Read run.json, device.toml and weights.npz of ``run_dir`` (each checked; errors are RunError); spiking
    runs are refused unless ``spiking`` (the NIR export reads them), conv runs unless ``conv`` (their arrays are
    checked by :func:`load_conv_weights`; ``dims`` are then their activity sizes)."""
    path = Path(run_dir)
    record = read_run(path)
    if record["config"].get("mano"):
        raise RunError(f"{path} is a MANO run: MANO models export to fp32 ONNX only (fo-edge export RUN_DIR --out "
                       f"FILE.onnx), not to NIR")
    if record["config"].get("conv") and not conv:
        raise RunError(f"{path} is a conv-net run; NIR export takes spiking MLP runs (export it to ONNX with --out)")
    if record["config"].get("activation") == "loihi-cuba" and not spiking:
        raise RunError(f"{path} is a spiking run; export it with --nir (ONNX export handles non-spiking MLP and "
                       f"conv runs)")
    if not (path / "device.toml").exists():
        raise RunError(f"{path} has no readable device.toml; re-run the simulation with this fo-edge")
    try:
        text = read_bounded(path / "device.toml", TEXT_FILE_BYTES, "device.toml", RunError).decode("utf-8")
    except UnicodeDecodeError:
        raise RunError(f"{path} has no readable device.toml; re-run the simulation with this fo-edge") from None
    profile = parse_device(text, str(path / "device.toml"))
    dims = [int(d) for d in record["config"]["dims"]]
    stored = load_conv_weights(path, record["config"]["conv"], dims[-1]) if record["config"].get("conv") else \
        load_weights(path, dims)
    return TrainedRun(path, record, profile, stored, dims, record["config"]["activation"])


def load_state_weights(run_dir: str | Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays of ``RUN_DIR/weights.npz`` stored under a model's state_dict names (MANO runs), checked against
    ``shapes`` (name -> shape): every name present, no other, each float32 of its shape; else RunError."""
    path, out = _read_weights(run_dir)
    missing, extra = sorted(set(shapes) - set(out)), sorted(set(out) - set(shapes))
    if missing or extra:
        raise RunError(f"{path} does not hold this model's parameters (missing {missing or 'none'}, unexpected "
                       f"{extra or 'none'})")
    for name, shape in shapes.items():
        if out[name].shape != tuple(shape) or out[name].dtype != np.float32:
            raise RunError(f"{path}: {name} should be float32 of shape {tuple(shape)}, got {out[name].dtype} "
                           f"{out[name].shape}")
    return out


def load_conv_weights(run_dir: str | Path, conv: dict, n_classes: int) -> dict[str, np.ndarray]:
    """The arrays of a conv run's weights.npz, checked against its spec (``conv``: channels, kernel, in_shape as
    run.json records them): ``K{l}`` (C_out, C_in, k, k) float32 per conv layer, then the dense ``W{L-1}``
    (n_classes, C*H*W of the last pooled map) float32; and, from an integer device, its store for every layer:
    ``D{l}`` (rows, C_in k k or the dense width) int32 mantissas with ``dexp{l}`` (rows,) int32 exponents."""
    try:
        channels, k = [int(c) for c in conv["channels"]], int(conv["kernel"])
        c, h, w = (int(v) for v in conv["in_shape"])
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{Path(run_dir) / 'run.json'}: config.conv is not a conv spec") from None
    shapes = []
    for out in channels:
        shapes.append((out, c, k, k))
        c, h, w = out, h // 2, w // 2
    shapes.append((n_classes, c * h * w))
    names = [f"K{l}" for l in range(len(channels))] + [f"W{len(channels)}"]
    path, out = _read_weights(run_dir)
    for name, shape in zip(names, shapes):
        array = out.get(name)
        if array is None or array.shape != shape or array.dtype != np.float32:
            got = None if array is None else f"{array.dtype} {array.shape}"
            raise RunError(f"{path}: {name} should be float32 of shape {shape}, got {got}")
    store = [f"D{l}" for l in range(len(shapes))] + [f"dexp{l}" for l in range(len(shapes))]
    if any(name in out for name in store):
        for l, shape in enumerate(shapes):
            rows = (shape[0], int(np.prod(shape[1:])))
            d, e = out.get(f"D{l}"), out.get(f"dexp{l}")
            if d is None or d.shape != rows or d.dtype != np.int32 or e is None or e.shape != rows[:1] \
                    or e.dtype != np.int32:
                raise RunError(f"{path}: D{l} / dexp{l} should be int32 of shapes {rows} / {rows[:1]}")
    extra = set(out) - set(names) - set(store)
    if extra:
        raise RunError(f"{path}: unexpected arrays {sorted(extra)}")
    return out


def run_status_note(record: dict) -> str | None:
    """A one-line warning when the run (its run.json ``record``) did not complete: its weights are those of a
    stopped or interrupted run."""
    status = record.get("status")
    if status == "complete":
        return None
    reason = (record.get("stop") or {}).get("message")
    return f"the run is {status}{': ' + reason if reason else ''}; these are its last weights, not a finished model"


def real_weights(run: TrainedRun) -> list[np.ndarray]:
    """W_l: (d_{l+1}, d_l) float32 real values (mantissa x 2**exp for integer runs, exp per row for per-channel
    scales)."""
    out = []
    for l in range(len(run.dims) - 1):
        w = run.stored[f"W{l}"].astype(np.float64)
        if f"exp{l}" in run.stored:
            w = w * 2.0 ** run.stored[f"exp{l}"].astype(np.float64).reshape(-1, 1)
        out.append(w.astype(np.float32))
    return out


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("fo-edge", "torch", "numba", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
