"""Every rule learns real data: the scikit-learn digits set to >= 90 % test accuracy in seconds (torch path)."""
import pytest

import fo_edge

# (lr, rule options) per rule: FOTON's orthogonal weights bound the logits, so a softmax temperature < 1 helps.
SETTINGS = {"bp": (0.05, {}), "pepita": (0.3, {}), "ftp": (0.3, {}), "foton": (0.05, {"temperature": 0.25})}


@pytest.mark.parametrize("rule", sorted(SETTINGS))
def test_rule_trains_digits_to_90_percent(rule, tmp_path):
    lr, options = SETTINGS[rule]
    result = fo_edge.simulate(rule=rule, device="gpu-fp32", dataset="digits", model="64-128-10", epochs=10,
                              batch_size=16, lr=lr, out=str(tmp_path / rule), rule_options=options)
    assert result.accuracy >= 0.90, result.history
    assert (result.run_dir / "run.json").is_file()
