"""Tests for dropout_lab.model: gradients, inverted dropout, settings validation, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest

from dropout_lab.errors import ConfigError
from dropout_lab.model import BLAS_MIN_WEIGHTS, MLP, MLPSpec, blas_matmul, loss_forward_backward


def make_model(activation: str = "tanh", n_outputs: int = 1, *, hidden=(5, 4), n_inputs: int = 3,
               drop_input: float = 0.2, drop_hidden=0.3, loss: str = "xent", seed: int = 0) -> MLP:
    """A small float64 network with non-zero random biases (no unit sits exactly at a relu kink)."""
    spec = MLPSpec(n_inputs=n_inputs, hidden=list(hidden), n_outputs=n_outputs, activation=activation,
                   init="xavier", drop_input=drop_input, drop_hidden=drop_hidden, loss=loss, dtype="float64")
    rng = np.random.default_rng(seed)
    model = MLP(spec, rng)
    for b in model.b:
        b[...] = rng.normal(0.0, 0.5, size=b.shape)
    return model


def identity_model(width: int, *, drop_input: float = 0.0, drop_hidden=0.0) -> MLP:
    """A relu net ``width -> width -> width`` whose weights are identities and biases zero.

    On positive inputs its training output is exactly the input times the dropout masks, scaled:
    what dropout does becomes directly visible in the output.
    """
    spec = MLPSpec(n_inputs=width, hidden=[width], n_outputs=width, activation="relu", init="he",
                   drop_input=drop_input, drop_hidden=drop_hidden, dtype="float64")
    model = MLP(spec, np.random.default_rng(0))
    for W, b in zip(model.W, model.b):
        W[...] = np.eye(width)
        b[...] = 0.0
    return model


def numeric_loss(model: MLP, X: np.ndarray, y: np.ndarray, mask_seed: int, reduction: str) -> float:
    z = model.forward(X, np.random.default_rng(mask_seed))
    return loss_forward_backward(z, y, model.spec.loss, reduction)[0]


def check_gradients(model: MLP, X: np.ndarray, y: np.ndarray, reduction: str = "mean",
                    mask_seed: int = 7, eps: float = 1e-6) -> None:
    """Compare backward with central differences; every pass uses the same dropout masks."""
    z = model.forward(X, np.random.default_rng(mask_seed))
    _, _, dz = loss_forward_backward(z, y, model.spec.loss, reduction)
    grads = [np.zeros_like(p) for p in model.params]
    model.backward(dz, grads)
    analytic = [g.copy() for g in grads]
    for p, g in zip(model.params, analytic):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = numeric_loss(model, X, y, mask_seed, reduction)
            p[idx] = saved - eps
            down = numeric_loss(model, X, y, mask_seed, reduction)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["xent", "mse"])
@pytest.mark.parametrize("n_outputs", [1, 3], ids=["binary_sigmoid", "softmax3"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_backward_matches_finite_differences_with_fixed_dropout_mask(activation, n_outputs, loss) -> None:
    model = make_model(activation, n_outputs, loss=loss)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, max(2, n_outputs), size=6)
    check_gradients(model, X, y)


def test_backward_matches_finite_differences_with_sum_reduction_and_per_layer_rates() -> None:
    model = make_model("relu", 4, hidden=(6, 5, 4), drop_input=0.1, drop_hidden=[0.5, 0.0, 0.25], loss="xent")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(8, 3))
    y = rng.integers(0, 4, size=8)
    check_gradients(model, X, y, reduction="sum")


def test_the_fixed_mask_really_drops_units() -> None:
    """The gradient check is only meaningful if the masked pass differs from the clean one."""
    model = make_model("tanh", 3, drop_input=0.4, drop_hidden=0.4)
    X = np.random.default_rng(3).normal(size=(6, 3))
    masked = model.forward(X, np.random.default_rng(7)).copy()
    again = model.forward(X, np.random.default_rng(7)).copy()
    np.testing.assert_array_equal(masked, again)
    assert not np.allclose(masked, model.forward(X))


def test_loss_values_match_hand_computation() -> None:
    z = np.array([[0.3], [-1.2], [2.0]])
    y = np.array([1, 0, 1])
    p = 1 / (1 + np.exp(-z[:, 0]))
    xent = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    mse = np.mean(0.5 * (p - y) ** 2)
    assert loss_forward_backward(z, y, "xent")[0] == pytest.approx(xent, rel=1e-12)
    assert loss_forward_backward(z, y, "mse")[0] == pytest.approx(mse, rel=1e-12)
    assert loss_forward_backward(z, y, "xent", "sum")[0] == pytest.approx(3 * xent, rel=1e-12)
    zs = np.array([[1.0, 2.0, 0.5], [0.1, -0.3, 0.2]])
    ys = np.array([1, 2])
    soft = np.exp(zs) / np.exp(zs).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(soft[[0, 1], ys]))
    loss, y_hat, _ = loss_forward_backward(zs, ys, "xent")
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(y_hat, soft, rtol=1e-12)


# --- BLAS called directly ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["a @ b", "a.T @ b", "a @ b.T"])
def test_blas_matmul_writes_the_product_into_out(layout, dtype) -> None:
    rng = np.random.default_rng(20)
    a = rng.normal(size=(7, 5)).astype(dtype)
    b = rng.normal(size=(5, 6)).astype(dtype)
    if layout == "a.T @ b":
        a = np.ascontiguousarray(a.T).T  # a transposed view, as h.T in backward
    elif layout == "a @ b.T":
        b = np.ascontiguousarray(b.T).T  # as W.T in backward
    out = np.full((7, 6), np.nan, dtype=dtype)
    assert blas_matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_blas_matmul_adds_beta_times_out() -> None:
    rng = np.random.default_rng(21)
    a, b, out = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    expected = 0.9 * out + a @ b
    blas_matmul(a, b, out=out, beta=0.9)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_blas_matmul_refuses_an_output_it_cannot_write_in_place() -> None:
    out = np.zeros((4, 10))[:, ::2]  # not C-ordered: BLAS would work on a copy
    with pytest.raises(RuntimeError, match="in place"):
        blas_matmul(np.ones((4, 3)), np.ones((3, 5)), out=out)


def test_networks_with_big_weight_matrices_use_blas() -> None:
    side = int(BLAS_MIN_WEIGHTS ** 0.5)
    big = MLP(MLPSpec(n_inputs=4, hidden=[side, side], n_outputs=2), np.random.default_rng(0))
    small = MLP(MLPSpec(n_inputs=4, hidden=[8, 8], n_outputs=2), np.random.default_rng(0))
    assert big.blas and not small.blas


def test_backward_through_blas_matches_finite_differences() -> None:
    model = make_model("relu", 3, hidden=(5, 4))
    model.blas = True  # the products of a big network, on a network small enough to check
    rng = np.random.default_rng(22)
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, 3, size=6)
    check_gradients(model, X, y)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_blas_and_numpy_products_give_the_same_passes(activation) -> None:
    plain = make_model(activation, 3, hidden=(70, 60), n_inputs=5)
    blas = make_model(activation, 3, hidden=(70, 60), n_inputs=5)
    assert blas.blas and blas.W[1].size >= BLAS_MIN_WEIGHTS
    plain.blas = False
    X = np.random.default_rng(23).normal(size=(9, 5))
    y = np.random.default_rng(24).integers(0, 3, size=9)
    np.testing.assert_allclose(blas.forward(X), plain.forward(X), rtol=1e-12)
    grads = []
    for model in (plain, blas):
        z = model.forward(X, np.random.default_rng(25))
        dz = loss_forward_backward(z, y, "xent")[2]
        grads.append([np.zeros_like(p) for p in model.params])
        model.backward(dz, grads[-1])
    for g_plain, g_blas in zip(*grads):
        np.testing.assert_allclose(g_blas, g_plain, rtol=1e-10, atol=1e-14)


def test_backward_with_accumulate_adds_the_gradients_to_grads() -> None:
    model = make_model("relu", 3, hidden=(70, 60), n_inputs=5)
    X = np.random.default_rng(26).normal(size=(9, 5))
    y = np.random.default_rng(27).integers(0, 3, size=9)
    z = model.forward(X, np.random.default_rng(28))
    dz = loss_forward_backward(z, y, "xent")[2]
    grads = [np.zeros_like(p) for p in model.params]
    model.backward(dz, grads)
    accumulated = [np.random.default_rng(29).normal(size=p.shape) for p in model.params]
    expected = [a + g for a, g in zip(accumulated, grads)]
    model.backward(dz, accumulated, accumulate=True)
    for a, e in zip(accumulated, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)


# --- inverted dropout --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_scaling_keeps_the_mean_activation(rate: float) -> None:
    # Output = (input mask) / (1 - rate) on an all-ones input: the mean over many draws must be 1.
    model = identity_model(50, drop_input=rate)
    out = model.forward(np.ones((4000, 50)), np.random.default_rng(11))
    survivors = out[out != 0]
    np.testing.assert_allclose(survivors, 1.0 / (1.0 - rate), rtol=1e-12)
    assert out.mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.75])
def test_fraction_of_zeroed_units_is_the_drop_rate(rate: float) -> None:
    model = identity_model(40, drop_hidden=rate)
    out = model.forward(np.ones((5000, 40)), np.random.default_rng(12))
    assert (out == 0).mean() == pytest.approx(rate, abs=0.01)


def test_drop_rate_zero_is_the_identity() -> None:
    model = make_model("relu", 3, drop_input=0.0, drop_hidden=0.0)
    X = np.random.default_rng(4).normal(size=(10, 3))
    train_out = model.forward(X, np.random.default_rng(5)).copy()
    np.testing.assert_allclose(train_out, model.forward(X), rtol=1e-14, atol=0)


def test_evaluation_uses_no_mask_and_no_rescaling() -> None:
    model = make_model("tanh", 3, drop_input=0.5, drop_hidden=0.5)
    X = np.random.default_rng(6).normal(size=(10, 3))
    first = model.forward(X).copy()
    second = model.forward(X).copy()
    np.testing.assert_array_equal(first, second)
    h = X
    for i, (W, b) in enumerate(zip(model.W, model.b)):
        h = h @ W + b
        if i < len(model.W) - 1:
            h = np.tanh(h)
    np.testing.assert_allclose(first, h, rtol=1e-12)


def test_predict_proba_is_the_evaluation_softmax() -> None:
    model = make_model("sigmoid", 3, drop_input=0.3, drop_hidden=0.3)
    X = np.random.default_rng(8).normal(size=(7, 3))
    z = model.forward(X)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X), expected.argmax(axis=1))


def test_per_layer_drop_hidden_list_sets_each_layer_rate() -> None:
    spec = MLPSpec(n_inputs=4, hidden=[8, 8, 8], n_outputs=2, drop_input=0.1, drop_hidden=[0.5, 0.0, 0.3])
    assert spec.drop_hidden == [0.5, 0.0, 0.3]
    assert MLP(spec, np.random.default_rng(0)).drop_rates == [0.1, 0.5, 0.0, 0.3]
    single = MLPSpec(n_inputs=4, hidden=[8, 8], n_outputs=2, drop_hidden=0.4)
    assert single.drop_hidden == [0.4, 0.4]


def test_per_layer_drop_rates_apply_to_their_own_layer() -> None:
    # 1 input -> 1 hidden unit (rate a) -> 30 hidden units (rate b) -> 30 outputs, all weights 1 /
    # identity: a dropped first unit zeroes a whole row, a dropped second-layer unit one entry.
    a, b, width = 0.3, 0.6, 30
    spec = MLPSpec(n_inputs=1, hidden=[1, width], n_outputs=width, activation="relu",
                   drop_hidden=[a, b], dtype="float64")
    model = MLP(spec, np.random.default_rng(0))
    model.W[0][...] = 1.0
    model.W[1][...] = 1.0
    model.W[2][...] = np.eye(width)
    for bias in model.b:
        bias[...] = 0.0
    out = model.forward(np.ones((6000, 1)), np.random.default_rng(13))
    rows_zero = (out == 0).all(axis=1)
    assert rows_zero.mean() == pytest.approx(a, abs=0.02)
    kept = out[~rows_zero]
    assert (kept == 0).mean() == pytest.approx(b, abs=0.02)
    np.testing.assert_allclose(kept[kept != 0], 1.0 / ((1 - a) * (1 - b)), rtol=1e-12)


def test_drop_hidden_list_of_wrong_length_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.drop_hidden"):
        MLPSpec(n_inputs=4, hidden=[8, 8], n_outputs=2, drop_hidden=[0.5])


# --- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key", "shown"),
    [
        ({"drop_input": 1.0}, "model.drop_input", "1.0"),
        ({"drop_input": -0.1}, "model.drop_input", "-0.1"),
        ({"drop_hidden": 1.0}, "model.drop_hidden", "1.0"),
        ({"drop_hidden": -0.1}, "model.drop_hidden", "-0.1"),
        ({"drop_hidden": [0.5, 1.5]}, "model.drop_hidden[1]", "1.5"),
        ({"hidden": [0]}, "model.hidden[0]", "0"),
        ({"hidden": [16, -2]}, "model.hidden[1]", "-2"),
        ({"activation": "swish"}, "model.activation", "'swish'"),
        ({"init": "orthogonal"}, "model.init", "'orthogonal'"),
        ({"loss": "hinge"}, "model.loss", "'hinge'"),
        ({"dtype": "float16"}, "model.dtype", "'float16'"),
    ],
)
def test_bad_settings_raise_config_error_naming_key_and_value(kwargs, key, shown) -> None:
    settings = {"n_inputs": 4, "hidden": [16] * len(kwargs.get("hidden", [16])), "n_outputs": 2} | kwargs
    if "drop_hidden" in kwargs and isinstance(kwargs["drop_hidden"], list):
        settings["hidden"] = [16] * len(kwargs["drop_hidden"])
    with pytest.raises(ConfigError) as info:
        MLPSpec(**settings)
    message = str(info.value)
    assert f"'{key}'" in message
    assert f"got {shown}" in message


# --- saving and loading ----------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(tmp_path) -> None:
    model = make_model("relu", 3, hidden=(7, 5), drop_input=0.2, drop_hidden=[0.5, 0.1])
    path = tmp_path / "model.npz"
    model.save(str(path))
    with np.load(path, allow_pickle=False) as f:  # no object arrays: readable without pickle
        assert {"W0", "b0", "W2", "b2", "sizes"} <= set(f.files)
    loaded = MLP.load(str(path))
    X = np.random.default_rng(9).normal(size=(20, 3))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.spec.sizes == model.spec.sizes
    assert loaded.drop_rates == model.drop_rates
    assert loaded.spec.activation == "relu" and loaded.dtype == np.float64


def test_loading_a_truncated_file_raises_config_error(tmp_path) -> None:
    path = tmp_path / "model.npz"
    make_model().save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="model.npz"):
        MLP.load(str(path))


def test_loading_a_file_with_a_wrong_shape_array_raises_config_error(tmp_path) -> None:
    path = tmp_path / "model.npz"
    make_model().save(str(path))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["W1"] = np.zeros((3, 3))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ConfigError, match="shape"):
        MLP.load(str(bad))


def test_loading_a_missing_file_raises_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        MLP.load(str(tmp_path / "absent.npz"))
