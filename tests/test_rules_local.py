"""PEPITA and FTP on tiny nets, against values worked out by hand from ALGORITHMS.md; BP against a closed form."""
import numpy as np
import pytest

from fo_edge.errors import ConfigError
from fo_edge.rules import compute_updates

X = np.array([[1.0, 2.0]])
T = np.array([[1.0, 0.0]])
I2 = np.eye(2)


def test_pepita_by_hand():
    # y = x = [1, 2]; e = y - t = [0, 2]; x_mod = x + e F = [1, 2] + [0, 1] = [1, 3]
    # h1 = [1, 2], h1_mod = [1, 3]; g1 = (h1 - h1_mod)^T x_mod = [0, -1]^T [1, 3]; g2 = e^T h1_mod = [0, 2]^T [1, 3]
    g1, g2 = compute_updates("pepita", [I2, I2], X, T, activation="identity", error="mse", feedback=0.5 * I2)
    np.testing.assert_array_equal(g1, [[0, 0], [-1, -3]])
    np.testing.assert_array_equal(g2, [[0, 0], [2, 6]])


def test_pepita_three_layers_uses_modulated_previous_activity():
    # relu, W = I: h1_mod = x_mod = [1, 3], h2_mod = [1, 3]; g2 = (h2 - h2_mod)^T h1_mod = [0,-1]^T [1,3]
    g1, g2, g3 = compute_updates("pepita", [I2, I2, I2], X, T, activation="relu", error="mse", feedback=0.5 * I2)
    np.testing.assert_array_equal(g2, [[0, 0], [-1, -3]])
    np.testing.assert_array_equal(g3, [[0, 0], [2, 6]])


def test_ftp_difference_target_by_hand():
    # h1 = y = [1, 2], e = y - t = [0, 2], y_hat = e + t = [1, 2]; G = 0.5 I, gamma 2, f = tanh:
    # tau1 = h1 + 2 (tanh(t G^T) - tanh(y_hat G^T)) = [1, 2] + 2 ([tanh .5, 0] - [tanh .5, tanh 1]) = [1, 2 - 2 tanh 1]
    # delta1 = h1 - tau1 = [0, 2 tanh 1]; g1 = delta1^T x; tau2 = relu(tau1) so delta2 = delta1 and g2 = delta2^T h1
    g1, g2, g3 = compute_updates("ftp", [I2, I2, I2], X, T, activation="relu", error="mse", feedback=0.5 * I2,
                                 target="difference", gamma=2.0, target_f="tanh")
    c = 2 * np.tanh(1.0)
    np.testing.assert_allclose(g1, [[0, 0], [c, 2 * c]], rtol=1e-14)
    np.testing.assert_allclose(g2, [[0, 0], [c, 2 * c]], rtol=1e-14)
    np.testing.assert_array_equal(g3, [[0, 0], [2, 4]])


def test_ftp_difference_target_is_the_default_and_raw_y_hat_is_an_option():
    # with a CE error y_hat = softmax(y) = e + t; with y_hat="raw" the contrast uses the logits themselves
    default = compute_updates("ftp", [I2, I2], X, T, activation="tanh", error="ce", feedback=0.5 * I2)
    explicit = compute_updates("ftp", [I2, I2], X, T, activation="tanh", error="ce", feedback=0.5 * I2,
                               target="difference", y_hat="softmax")
    raw = compute_updates("ftp", [I2, I2], X, T, activation="tanh", error="ce", feedback=0.5 * I2, y_hat="raw")
    assert all(np.array_equal(a, b) for a, b in zip(default, explicit))
    h1 = np.tanh(X[0])
    tau1 = h1 + np.tanh(0.5 * T[0]) - np.tanh(0.5 * h1)  # y = h1 (W2 = I), raw y_hat = y
    np.testing.assert_allclose(raw[0], ((h1 - tau1) * (1 - h1 ** 2))[:, None] * X[0][None, :], rtol=1e-12)


def test_ftp_by_hand():
    # the error_preactivation target (fo-edge's older working definition):
    # a1 = [1, 2], e = [0, 2]; tau1 = relu(a1 - e G^T) = relu([1, 2] - [0, 1]) = [1, 1]
    # delta1 = (h1 - tau1) * relu'(a1) = [0, 1]; g1 = delta1^T x = [[0, 0], [1, 2]]
    # tau2 = relu(tau1 W2^T) = [1, 1]; h2 = [1, 2]; delta2 = [0, 1]; g2 = delta2^T h1 = [[0, 0], [1, 2]]
    # g3 = e^T h2 = [[0, 0], [2, 4]]
    g1, g2, g3 = compute_updates("ftp", [I2, I2, I2], X, T, activation="relu", error="mse", feedback=0.5 * I2,
                                 target="error_preactivation")
    np.testing.assert_array_equal(g1, [[0, 0], [1, 2]])
    np.testing.assert_array_equal(g2, [[0, 0], [1, 2]])
    np.testing.assert_array_equal(g3, [[0, 0], [2, 4]])


def test_ftp_label_target_by_hand():
    # tau1 = relu(a1 + t G^T) = relu([1, 2] + [0.5, 0]) = [1.5, 2]; delta1 = [-0.5, 0]; g1 = [[-0.5, -1], [0, 0]]
    g1, _ = compute_updates("ftp", [I2, I2], X, T, activation="relu", error="mse", feedback=0.5 * I2,
                            target_mode="label")
    np.testing.assert_array_equal(g1, [[-0.5, -1.0], [0, 0]])


def test_ftp_local_output_loss_by_hand():
    """output_loss=local: the output layer learns 0.5||y - tau_L||^2 with tau_L = W_L tau_{L-1}.
    W1 = I, W2 = [[1, 2], [3, 4]], x = [1, 2], G = I, label target: a1 = h1 = [1, 2], tau1 = a1 + t G^T = [2, 2];
    y = h1 W2^T = [5, 11], tau2 = tau1 W2^T = [6, 14]; g2 = (y - tau2)^T h1 = [[-1, -2], [-3, -6]]; g1 is FTP's
    usual (h1 - tau1)^T x = [[-1, -2], [0, 0]] (identity activation)."""
    w2 = np.array([[1.0, 2.0], [3.0, 4.0]])
    for backend in ("torch", "numba"):
        g1, g2 = compute_updates("ftp", [I2, w2], X, T, activation="identity", error="mse", feedback=I2,
                                 target="label", output_loss="local", backend=backend)
        np.testing.assert_allclose(g1, [[-1.0, -2.0], [0, 0]], atol=1e-12)
        np.testing.assert_allclose(g2, [[-1.0, -2.0], [-3.0, -6.0]], atol=1e-12)


def test_bp_closed_form_two_layer_relu():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    x, t = rng.standard_normal((7, 4)), np.eye(3)[rng.integers(0, 3, 7)]
    a1 = x @ w1.T
    h1 = np.maximum(a1, 0)
    y = h1 @ w2.T
    p = np.exp(y - y.max(1, keepdims=True))
    e = p / p.sum(1, keepdims=True) - t
    g2 = e.T @ h1 / 7
    g1 = ((e @ w2) * (a1 > 0)).T @ x / 7
    b1, b2 = compute_updates("bp", [w1, w2], x, t, activation="relu", error="ce")
    np.testing.assert_allclose(b1, g1, atol=1e-10)
    np.testing.assert_allclose(b2, g2, atol=1e-10)


def test_seeded_feedback_is_reproducible(small_batch):
    weights, x, t = small_batch
    for rule in ("pepita", "ftp"):
        a = compute_updates(rule, weights, x, t, seed=7)
        b = compute_updates(rule, weights, x, t, seed=7)
        c = compute_updates(rule, weights, x, t, seed=8)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"rule": "nope"}, "unknown rule"),
    ({"rule": "foton", "ortho_evry": 3}, "did you mean 'ortho_every'"),
    ({"rule": "ftp", "target_mode": "x"}, "unknown FTP target"),
    ({"rule": "ftp", "target": "x"}, "unknown FTP target"),
    ({"rule": "ftp", "gamma": 0.0}, "gamma must be > 0"),
    ({"rule": "pepita", "feedback": np.zeros((3, 3))}, "must have shape"),
])
def test_bad_rule_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compute_updates(kwargs.pop("rule"), [I2, I2], X, T, **kwargs)


def test_pepita_modulated_output_error_by_hand():
    # as test_pepita_by_hand, but the last layer uses the modulated pass's error: y_mod = h1_mod = [1, 3],
    # e_mod = y_mod - t = [0, 3]; g2 = e_mod^T h1_mod = [0, 3]^T [1, 3]
    g1, g2 = compute_updates("pepita", [I2, I2], X, T, activation="identity", error="mse", feedback=0.5 * I2,
                             output_error="modulated")
    np.testing.assert_array_equal(g1, [[0, 0], [-1, -3]])
    np.testing.assert_array_equal(g2, [[0, 0], [3, 9]])


def test_he_uniform_init_bounds():
    from fo_edge.models import init_weights

    (w,) = init_weights((784, 1024), seed=0, init="he_uniform")
    bound = np.sqrt(6 / 784)
    assert w.shape == (1024, 784) and np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 1e-3
