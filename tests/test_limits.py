"""Every numeric CLI option through extreme values (fo_edge.limits, one table for every command): one line on
stderr, exit 2, nothing written; the torch device and output-file checks; the table itself by hypothesis."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fo_edge import limits
from fo_edge.cli import main
from fo_edge.errors import ConfigError

#: (command prefix, option, LIMITS key) for every numeric option of every command
NUMERIC_OPTIONS = [
    *[(["simulate", "--device", "gpu-fp32", "--dataset", "digits", "--model", "64-10"], f"--{k.replace('_', '-')}", k)
      for k in ("epochs", "batch_size", "lr", "seed", "limit", "checkpoint_every", "stall_steps", "saturation_limit",
                "lr_gamma", "momentum", "weight_decay", "dropout")],
    (["demo"], "--steps", "steps"),
    *[(["diagnose", "--model", "64-16-10", "--dataset", "digits"], f"--{k.replace('_', '-')}", k)
      for k in ("steps", "every", "batch_size", "lr", "seed")],
]


def _extremes(bound: limits.Bound) -> list[str]:
    """Values just outside the bound, far outside it, and (for floats) NaN and infinities."""
    low = bound.lo if bound.lo_open else bound.lo - (1 if bound.kind is int else 1e-3)
    out = [repr(low), repr(bound.hi + 1 if bound.kind is int else bound.hi * 1.001 + 1e-9),
           "-99999999999999999999", "99999999999999999999", "1e308"]
    if bound.kind is float:
        out += ["nan", "inf", "-inf"]
    return out


CASES = [(cmd, flag, value) for cmd, flag, key in NUMERIC_OPTIONS for value in _extremes(limits.LIMITS[key])]


@pytest.mark.parametrize("cmd, flag, value", CASES, ids=[f"{c[0]}{f}={v}" for c, f, v in CASES])
def test_every_numeric_option_refuses_extremes_in_one_line(tmp_path, capsys, cmd, flag, value):
    out = tmp_path / ("run" if cmd[0] in ("simulate", "demo") else "p.png")
    argv = [*cmd, flag, value, "--out" if cmd[0] in ("simulate", "demo") else "--plot", str(out)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fo-edge: error:") and flag in lines[0], err
    assert not out.exists()


def test_sweep_workers_and_an_unwritable_plot_folder(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nrule = "ftp"\ndevice = "mcu-int8"\nmodel = "64-16-10"\ndataset = "digits"\n')
    for argv, needle in ((["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "0"], "--workers"),
                         (["energy-report", str(tmp_path), "--plot", str(tmp_path / "none" / "p.png")],
                          "does not exist"),
                         (["diagnose", "--plot", str(tmp_path / "none" / "p.png")], "does not exist"),
                         (["export", str(tmp_path), "--out", str(tmp_path / "none" / "m.onnx")], "does not exist")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_torch_devices():
    limits.check_torch_device("cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        limits.check_torch_device("tpu")
    with pytest.raises(ConfigError, match="cpu or cuda"):
        limits.check_torch_device("meta")
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            limits.check_torch_device("cuda")


@given(st.sampled_from(sorted(limits.LIMITS)), st.one_of(st.integers(-10**12, 10**12),
                                                       st.floats(allow_nan=True, allow_infinity=True)))
def test_check_accepts_exactly_the_table(name, value):
    bound = limits.LIMITS[name]
    inside = (not isinstance(value, bool)
              and (isinstance(value, int) if bound.kind is int else isinstance(value, (int, float)))
              and not (isinstance(value, float) and not math.isfinite(value))
              and (value > bound.lo if bound.lo_open else value >= bound.lo) and value <= bound.hi)
    if inside:
        limits.check(name, value)
    else:
        with pytest.raises(ConfigError) as info:
            limits.check(name, value)
        assert "\n" not in str(info.value) and str(info.value).startswith("--" + name.replace("_", "-"))


def test_weights_that_cannot_fit_are_refused_before_allocating(tmp_path, capsys):
    """The torch path has no arena: its float32 weights are checked against the device's capacity (gpu-fp32:
    80 GB), and every path's against the host's memory, before init allocates anything."""
    import os

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cases = [("64-65536x30-10", "does not fit in gpu-fp32's memory")]  # 464 GiB of weights > 80 GB
    layers = host // (4 * 65536 * 65536) + 1  # just more 16 GiB layers than the host holds
    if 4 * 65536 * 65536 * layers < 80e9:  # below the device's capacity, so only the host check can refuse
        cases.append((f"64-65536x{layers + 1}-10", "of host memory for its weights"))
    for model, needle in cases:
        out = tmp_path / model
        with pytest.raises(SystemExit) as info:
            main(["simulate", "--device", "gpu-fp32", "--dataset", "digits", "--model", model, "--out", str(out)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
