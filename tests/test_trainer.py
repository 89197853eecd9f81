"""Tests for dropout_lab.trainer: determinism, learning, optimisers, constraints and stopping rules."""

from __future__ import annotations

import numpy as np
import pytest

from dropout_lab.data import Dataset, load_dataset
from dropout_lab.errors import ConfigError
from dropout_lab.model import MLP, MLPSpec
from dropout_lab.trainer import TrainResult, TrainSettings, evaluate, train


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset({"name": "moons", "n_samples": 1000, "noise": 0.2}, "float64")


@pytest.fixture(scope="module")
def small_noisy() -> Dataset:
    """Few rows, many classes, label noise: a wide net overfits it within a few epochs."""
    return load_dataset({"name": "classification", "n_samples": 400, "n_classes": 4, "noise": 0.2}, "float64")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset({"name": "digits"})


def fit(data: Dataset, seed: int = 0, *, hidden=(32, 32), activation: str = "relu", drop_input: float = 0.0,
        drop_hidden=0.0, dtype: str = "float64", callback=None, **settings) -> tuple[MLP, TrainResult]:
    """Train a fresh network on ``data``; one Generator seeded by ``seed`` drives everything."""
    rng = np.random.default_rng(seed)
    spec = MLPSpec(n_inputs=data.n_features, hidden=list(hidden), n_outputs=1 if data.n_classes == 2 else data.n_classes,
                   activation=activation, drop_input=drop_input, drop_hidden=drop_hidden, dtype=dtype)
    model = MLP(spec, rng)
    result = train(model, data.X_train, data.y_train, data.X_val, data.y_val, TrainSettings(**settings), rng,
                   callback)
    return model, result


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def weight_norm2(model: MLP) -> float:
    return float(sum((W.astype(np.float64) ** 2).sum() for W in model.W))


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_bitwise_identical_history_and_weights(moons) -> None:
    kwargs = dict(drop_input=0.1, drop_hidden=0.5, lr=0.05, epochs=5, batch_size=32)
    model_a, a = fit(moons, seed=3, **kwargs)
    model_b, b = fit(moons, seed=3, **kwargs)
    assert without_timing(a.history) == without_timing(b.history)
    for wa, wb in zip(model_a.params, model_b.params):
        np.testing.assert_array_equal(wa, wb)
    assert (a.status, a.epochs, a.steps, a.samples) == (b.status, b.epochs, b.steps, b.samples)


def test_different_seeds_give_different_histories(moons) -> None:
    kwargs = dict(drop_hidden=0.5, lr=0.05, epochs=3, batch_size=32)
    _, a = fit(moons, seed=1, **kwargs)
    _, b = fit(moons, seed=2, **kwargs)
    assert [row["train_loss"] for row in a.history] != [row["train_loss"] for row in b.history]


# --- learning ------------------------------------------------------------------------------------


def test_network_learns_moons(moons) -> None:
    model, result = fit(moons, lr=0.1, epochs=30, batch_size=32)
    assert result.status == "completed"
    assert result.final["val_acc"] >= 0.93
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    _, test_acc = evaluate(model, moons.X_test, moons.y_test, "xent")
    assert test_acc >= 0.93


def test_network_learns_xor_with_dropout() -> None:
    xor = load_dataset({"name": "xor"}, "float64")
    model, result = fit(xor, seed=1, hidden=(8,), activation="tanh", drop_hidden=0.1, lr=0.5, momentum=0.9,
                        batch_size=None, epochs=1500, eval_every=500)
    assert result.history[-1]["train_acc"] == 1.0
    np.testing.assert_array_equal(model.predict(xor.X_train), [0, 1, 1, 0])


@pytest.mark.parametrize(
    "settings",
    [dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True), dict(optimizer="adam", lr=0.01, momentum=0.0)],
    ids=["nesterov", "adam"],
)
def test_nesterov_and_adam_learn(moons, settings) -> None:
    _, result = fit(moons, epochs=20, batch_size=32, drop_hidden=0.2, **settings)
    assert result.status == "completed"
    assert result.final["val_acc"] >= 0.93


def test_nesterov_takes_a_different_path_than_plain_momentum(moons) -> None:
    _, plain = fit(moons, lr=0.05, epochs=2, nesterov=False)
    _, nesterov = fit(moons, lr=0.05, epochs=2, nesterov=True)
    assert plain.history[-1]["train_loss"] != nesterov.history[-1]["train_loss"]


# --- regularisation ------------------------------------------------------------------------------


def test_weight_decay_shrinks_weights_relative_to_none(moons) -> None:
    plain, _ = fit(moons, lr=0.05, epochs=10, weight_decay=0.0)
    decayed, _ = fit(moons, lr=0.05, epochs=10, weight_decay=0.01)
    assert weight_norm2(decayed) < 0.8 * weight_norm2(plain)
    # Biases are not decayed: weight decay touches weights only, so the bias norm need not shrink.


def test_max_norm_keeps_every_column_norm_within_the_bound(moons) -> None:
    c = 0.8
    unconstrained, _ = fit(moons, lr=0.3, epochs=5)
    assert max(np.linalg.norm(W, axis=0).max() for W in unconstrained.W) > c  # the bound is active
    model, result = fit(moons, lr=0.3, epochs=5, max_norm=c)
    assert result.status == "completed"
    for W in model.W:
        assert np.linalg.norm(W, axis=0).max() <= c * (1 + 1e-9)


# --- stopping rules ------------------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights(small_noisy) -> None:
    model, result = fit(small_noisy, hidden=(128, 128), lr=0.05, epochs=200, patience=3)
    assert result.status == "early_stopped"
    assert result.reason
    assert result.epochs < 200
    assert result.best_epoch is not None and result.best_epoch < result.epochs
    val_losses = {row["epoch"]: row["val_loss"] for row in result.history}
    assert val_losses[result.best_epoch] == min(val_losses.values())
    # The returned weights are the best epoch's, not the last epoch's.
    val_loss, _ = evaluate(model, small_noisy.X_val, small_noisy.y_val, "xent")
    assert val_loss == pytest.approx(val_losses[result.best_epoch], rel=1e-12)
    assert val_loss != pytest.approx(val_losses[result.epochs], rel=1e-9)
    assert result.final["epoch"] == result.best_epoch


def test_callback_returning_true_stops_training(moons) -> None:
    seen: list[int] = []

    def callback(epoch: int, row: dict) -> bool:
        seen.append(epoch)
        assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(row)
        return epoch >= 3

    _, result = fit(moons, lr=0.05, epochs=50, callback=callback)
    assert result.status == "stopped"
    assert result.reason
    assert seen == [1, 2, 3]
    assert result.epochs == 3 and len(result.history) == 3


def test_iterations_caps_the_number_of_steps(moons) -> None:
    n = moons.X_train.shape[0]
    batch = 100
    steps_per_epoch = -(-n // batch)
    iterations = steps_per_epoch + 3
    _, result = fit(moons, lr=0.05, epochs=50, batch_size=batch, iterations=iterations)
    assert result.steps == iterations
    assert result.epochs == 2
    assert result.samples == n + 3 * batch


def test_eval_every_thins_the_history(moons) -> None:
    _, result = fit(moons, lr=0.05, epochs=7, eval_every=3)
    assert [row["epoch"] for row in result.history] == [3, 6, 7]


# --- divergence ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_learning_rate_ends_as_diverged_without_exception(digits, dtype) -> None:
    _, result = fit(digits, dtype=dtype, lr=1e6, epochs=5)
    assert result.status == "diverged"
    assert "epoch" in result.reason and "1e+06" in result.reason
    assert result.epochs < 5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "settings",
    [dict(optimizer="adam", activation="relu"), dict(optimizer="sgd", activation="tanh")],
    ids=["adam-relu", "sgd-tanh"],
)
def test_huge_learning_rate_diverges_with_saturating_or_adam(digits, settings) -> None:
    _, result = fit(digits, dtype="float32", lr=1e6, epochs=5, **settings)
    assert result.status == "diverged"


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"lr": 0.0}, "trainer.lr"),
        ({"lr": float("inf")}, "trainer.lr"),
        ({"optimizer": "rmsprop"}, "trainer.optimizer"),
        ({"epochs": 0}, "trainer.epochs"),
        ({"batch_size": 0}, "trainer.batch_size"),
        ({"momentum": 1.0}, "trainer.momentum"),
        ({"patience": 0}, "trainer.patience"),
    ],
)
def test_bad_train_settings_raise_config_error(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainSettings(**kwargs)


# --- momentum SGD: gradients added to the velocities inside their products -----------------------


def fit_both_ways(data: Dataset, dtype: str, **settings) -> tuple[MLP, MLP, TrainResult]:
    """The same short run on a network that calls BLAS directly and on one using NumPy's products."""
    models = []
    for blas in (True, False):
        rng = np.random.default_rng(5)
        spec = MLPSpec(n_inputs=data.n_features, hidden=[80, 64], n_outputs=data.n_classes, activation="relu",
                       drop_input=0.2, drop_hidden=0.5, dtype=dtype)
        model = MLP(spec, rng)
        assert model.blas  # 80 x 64 weights
        model.blas = blas
        result = train(model, data.X_train, data.y_train, data.X_val, data.y_val,
                       TrainSettings(**{"lr": 0.05, "epochs": 2, "batch_size": 100, **settings}), rng)
        models.append(model)
    return *models, result


def assert_same_weights(a: MLP, b: MLP, dtype: str) -> None:
    for pa, pb in zip(a.params, b.params):
        np.testing.assert_allclose(pa, pb, rtol=1e-4 if dtype == "float32" else 1e-10,
                                   atol=1e-6 if dtype == "float32" else 1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_momentum_inside_the_products_matches_the_plain_update(digits, dtype) -> None:
    fused, plain, result = fit_both_ways(digits, dtype, momentum=0.9)
    assert result.status == "completed" and result.steps > 10
    assert_same_weights(fused, plain, dtype)


def test_momentum_inside_the_products_follows_learning_rate_decay(digits) -> None:
    fused, plain, _ = fit_both_ways(digits, "float64", momentum=0.9, lr_decay=0.5)
    assert_same_weights(fused, plain, "float64")


def test_momentum_inside_the_products_keeps_max_norm(digits) -> None:
    fused, plain, _ = fit_both_ways(digits, "float64", momentum=0.9, lr=0.5, max_norm=0.5)
    assert max(np.linalg.norm(W, axis=0).max() for W in fused.W) <= 0.5 * (1 + 1e-9)
    assert_same_weights(fused, plain, "float64")


@pytest.mark.parametrize(
    "settings",
    [dict(momentum=0.9, nesterov=True), dict(momentum=0.9, weight_decay=0.01), dict(optimizer="adam", lr=0.01),
     dict(momentum=0.0)],
    ids=["nesterov", "weight_decay", "adam", "no_momentum"],
)
def test_other_optimisers_on_blas_networks_match_numpy_products(digits, settings) -> None:
    fused, plain, _ = fit_both_ways(digits, "float64", **settings)
    assert_same_weights(fused, plain, "float64")


def test_momentum_inside_the_products_updates_replaced_parameter_arrays(digits) -> None:
    # A parameter array that is no longer a view into the flat vector is updated piece by piece
    # instead of by the whole-vector BLAS update: the same steps either way.
    models = []
    for replace in (False, True):
        rng = np.random.default_rng(5)
        model = MLP(MLPSpec(n_inputs=digits.n_features, hidden=[80, 64], n_outputs=digits.n_classes), rng)
        if replace:
            model.W[0] = model.W[0].copy()
            assert not model.owns_flat()
        train(model, digits.X_train, digits.y_train, digits.X_val, digits.y_val,
              TrainSettings(lr=0.05, momentum=0.9, epochs=2, batch_size=100), rng)
        models.append(model)
    assert_same_weights(*models, "float32")
    assert not np.array_equal(models[1].W[0], models[1].flat[:models[1].W[0].size].reshape(models[1].W[0].shape))


def test_only_plain_momentum_adds_gradients_inside_the_products() -> None:
    from dropout_lab.trainer import Optimizer

    model = MLP(MLPSpec(n_inputs=64, hidden=[80, 64], n_outputs=10), np.random.default_rng(0))
    assert Optimizer(model, TrainSettings(momentum=0.9)).accumulate
    for settings in (dict(momentum=0.9, nesterov=True), dict(momentum=0.9, weight_decay=0.1),
                     dict(optimizer="adam", momentum=0.0), dict(momentum=0.0)):
        assert not Optimizer(model, TrainSettings(**settings)).accumulate
    model.blas = False
    assert not Optimizer(model, TrainSettings(momentum=0.9)).accumulate


def test_blas_network_gives_bitwise_identical_runs_for_one_seed(digits) -> None:
    a, _, _ = fit_both_ways(digits, "float32", momentum=0.9)
    b, _, _ = fit_both_ways(digits, "float32", momentum=0.9)
    for pa, pb in zip(a.params, b.params):
        np.testing.assert_array_equal(pa, pb)
