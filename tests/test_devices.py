"""Device profiles: every bundled file loads through importlib.resources with a source for every number, and
broken files are refused with one line naming the file, the key and what was expected."""
import re
import subprocess
import sys
import tomllib
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fo_edge.device import Arithmetic, list_devices, load_device, parse_device
from fo_edge.errors import DeviceProfileError, FoEdgeError

BUNDLED = list_devices()


def test_the_six_profiles_ship_with_the_package():
    assert BUNDLED == ["fpga-fixed16", "gpu-fp32", "loihi-like", "loihi-sanafe", "mcu-int8", "memristor-rram"]


def test_loihi_sanafe_differs_from_loihi_like_only_in_sourced_event_costs():
    like, sana = load_device("loihi-like"), load_device("loihi-sanafe")
    assert sana.energy_pj["synop_pj"] == 35.5 and sana.energy_pj["neuron_active_pj"] == 72.8
    assert sana.spiking.barrier_ns == 299.0 and sana.spiking.synop_ns == 4.0
    assert all("SANA-FE" in sana.sources[f"energy.{k}"] for k in ("synop_pj", "neuron_active_pj", "spike_pj"))
    assert sana.spiking.weights == like.spiking.weights and sana.capacity == like.capacity
    assert (sana.weight, sana.activation, sana.error) == (like.weight, like.activation, like.error)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_number_has_a_source(name):
    text = (resources.files("fo_edge") / "profiles" / f"{name}.toml").read_text()
    profile = load_device(name)
    numbers = {f"{section}.{key}" for section, table in tomllib.loads(text).items() if isinstance(table, dict)
               for key in table}
    assert numbers and set(profile.sources) == numbers
    assert all(len(source) > 5 for source in profile.sources.values())
    assert profile.id == name


@pytest.mark.parametrize("name", BUNDLED)
def test_profile_values_are_plausible(name):
    p = load_device(name)
    assert p.capacity.sram_bytes > 0 and all(v >= 0 for v in p.energy_pj.values())
    assert (p.analog is not None) == (p.arithmetic is Arithmetic.ANALOG)


def test_mcu_and_loihi_numbers_match_devices_md():
    mcu, loihi = load_device("mcu-int8"), load_device("loihi-like")
    assert mcu.capacity.sram_bytes == 256 * 1024 and mcu.weight.bits == 8
    # DEVICES.md Measured anchors: MLPerf Tiny Cortex-M7 AD, 266.5 uJ over 264,192 MACs
    assert mcu.energy_pj["system_mac_pj"] == pytest.approx(266.5e6 / 264192, abs=0.05)
    assert "Cortex-M7" in mcu.sources["energy.system_mac_pj"] and "Cortex-M7" in mcu.name
    assert loihi.energy_pj["synop_pj"] == 23.6 and loihi.energy_pj["syn_update_pj"] == 120.0
    assert loihi.accumulator_bits == 24


GOOD = (resources.files("fo_edge") / "profiles" / "mcu-int8.toml").read_text()


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.replace('id = "mcu-int8"', 'id = "mcu-int8'), "not valid TOML"),
    (lambda s: s + '\nwieght_bits = 3\n', "unknown key"),
    (lambda s: s.replace("weight_bits = {", "wieght_bits = {"), "did you mean 'weight_bits'"),
    (lambda s: s.replace("value = 8, source = \"DEVICES.md 7.2: int8 weights", "value = \"8\", source = \"x"),
     "weight_bits.value: expected an integer"),
    (lambda s: s.replace("value = 1008.7", "value = -1008.7"), "energy.system_mac_pj.value: expected a value in"),
    (lambda s: s.replace("value = 8, source = \"DEVICES.md 7.2: int8 weights", "value = 0, source = \"x"),
     "formats.weight_bits.value: expected a value in [1, 32], got 0"),
    (lambda s: s.replace('arithmetic = "fixed"', 'arithmetic = "quantum"'), "arithmetic: expected one of"),
    (lambda s: re.sub(r'source = "lin2022 abstract: 256 KB[^"]*"', 'source = ""', s), "source: expected a non-empty"),
    (lambda s: s.replace("sram_bytes = { value = 262144, source", "sram_bytes = { value = 262144, src"),
     "capacity.sram_bytes: expected { value"),
])
def test_broken_profiles_give_one_clear_error(tmp_path, mutate, message):
    path = tmp_path / "broken.toml"
    path.write_text(mutate(GOOD))
    with pytest.raises(DeviceProfileError) as exc:
        load_device(str(path))
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_user_profile_by_path_and_cli_error(tmp_path):
    mine = tmp_path / "my-mcu.toml"
    mine.write_text(GOOD.replace('id = "mcu-int8"', 'id = "my-mcu"'))
    assert load_device(str(mine)).id == "my-mcu"
    broken = tmp_path / "broken.toml"
    broken.write_text(GOOD.replace("value = 1008.7", "value = -1.0"))
    proc = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--device", str(broken), "--dataset",
                           "digits", "--model", "64-10", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "energy.system_mac_pj" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "fo_edge", "simulate", "--device", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "cannot read device file" in missing.stderr


@given(st.text(max_size=300))
def test_loader_fuzz_never_crashes(text):
    try:
        profile = parse_device(text, "fuzz.toml")
    except FoEdgeError as exc:
        assert str(exc) and "\n" not in str(exc)  # one clear line, never another exception
    else:
        assert profile.id and profile.weight.bits >= 1


@given(st.dictionaries(st.sampled_from(["weight_bits", "activation_bits", "weight_frac_bits", "bogus"]),
                       st.one_of(st.integers(-5, 70), st.floats(allow_nan=True), st.text(max_size=5))))
def test_loader_fuzz_of_values_is_a_clean_error_or_a_profile(values):
    text = GOOD
    for key, value in values.items():
        literal = repr(value).replace("'", '"') if not isinstance(value, float) else \
            ("nan" if value != value else ("inf" if value == float("inf") else ("-inf" if value == float("-inf")
                                                                                else repr(value))))
        text = re.sub(rf"^{key} = {{ value = [^,]+,", lambda _m: f"{key} = {{ value = {literal},", text,
                      flags=re.M)
    try:
        profile = parse_device(text, "fuzz.toml")
    except FoEdgeError as exc:
        assert "fuzz.toml" in str(exc)  # the error names the file
    else:
        assert 1 <= profile.weight.bits <= 32 and 1 <= profile.activation.bits <= 32


def _loihi_text() -> str:
    return (resources.files("fo_edge") / "profiles" / "loihi-like.toml").read_text()


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace('neuron = "loihi-cuba"', 'neuron = "izhikevich"'), "neuron: expected one of 'loihi-cuba'"),
    (lambda t: t.replace('neuron = "loihi-cuba"', ''), "spiking: expected no [spiking] table"),
    (lambda t: t.replace('arithmetic = "fixed"', 'arithmetic = "float"'), "arithmetic = 'fixed' for a loihi-cuba"),
    (lambda t: t.replace("du = { value = 4095", "du = { value = 5000"), "spiking.du.value: expected a value in"),
    (lambda t: t.replace("delay = { value = 1", "delay = { value = 2"), "spiking.delay.value: expected a value in"),
    (lambda t: t.split("[spiking]")[0], "spiking: expected a [spiking] table"),
])
def test_broken_spiking_sections_give_one_clear_error(mutate, message):
    with pytest.raises(DeviceProfileError, match=re.escape(message)):
        parse_device(mutate(_loihi_text()), "loihi-test.toml")


def test_loihi_spiking_numbers_match_devices_md():
    sp = load_device("loihi-like").spiking
    assert (sp.neurons_per_core, sp.synapse_bytes_per_core, sp.cores_per_chip) == (1024, 131072, 128)
    assert (sp.synop_ns, sp.syn_update_ns, sp.neuron_active_ns, sp.neuron_inactive_ns) == (3.5, 6.1, 8.4, 5.3)
    assert load_device("mcu-int8").spiking is None
