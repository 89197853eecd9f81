"""Tests for the config tree in conf/ and dropout_lab.config: composition, typing and validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf.errors import OmegaConfBaseException

from dropout_lab.__main__ import config_dir
from dropout_lab.config import to_dict, validate, validate_space_entry
from dropout_lab.errors import ConfigError

from conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
GROUPS = ("dataset", "model", "trainer", "two_phase", "search", "tracking")


@pytest.fixture(scope="module")
def defaults() -> dict:
    return to_dict(compose_config([]))


@pytest.fixture
def cfg(defaults) -> dict:
    """A fresh copy of the resolved default config, to break one value at a time."""
    return copy.deepcopy(defaults)


def test_config_dir_holds_config_yaml() -> None:
    assert (Path(config_dir()) / "config.yaml").is_file()
    assert EXPERIMENTS, "conf/experiment/ has no experiment files"


# --- composition -------------------------------------------------------------------------------


def test_defaults_compose_and_validate(defaults) -> None:
    validate(defaults)
    assert defaults["task"] == "train"
    assert set(GROUPS) <= set(defaults)
    assert defaults["dataset"]["name"] == "mnist1d"
    assert defaults["trainer"]["optimizer"] == "sgd"
    assert defaults["tracking"]["backend"] == "mlflow"
    # Interpolations are resolved by to_dict.
    assert defaults["search"]["study_name"] == defaults["experiment_name"]
    assert defaults["tracking"]["experiment_name"] == defaults["experiment_name"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_file_composes_and_validates(compose, name) -> None:
    conf = to_dict(compose([f"+experiment={name}"]))
    validate(conf)


def test_seed_xor_experiment_is_the_2015_setup(compose) -> None:
    conf = to_dict(compose(["+experiment=seed_xor"]))
    assert conf["dataset"]["name"] == "xor"
    assert conf["model"]["hidden"] == [4]
    assert conf["model"]["activation"] == "sigmoid"
    assert conf["model"]["drop_hidden"] == 0.2
    assert conf["trainer"]["batch_size"] == "full"
    assert conf["experiment_name"] == "seed_xor"


@pytest.mark.parametrize("option", ["xor", "digits", "mnist1d", "moons", "classification", "idx", "csv"])
def test_every_dataset_option_composes(compose, option) -> None:
    conf = to_dict(compose([f"dataset={option}"]))
    assert conf["dataset"]["name"] == option


@pytest.mark.parametrize("option", ["sgd", "adam"])
def test_every_trainer_option_composes_and_validates(compose, option) -> None:
    conf = to_dict(compose([f"trainer={option}"]))
    validate(conf)
    assert conf["trainer"]["optimizer"] == option


def test_overrides_reach_the_config(compose) -> None:
    conf = to_dict(compose(["dataset=digits", "model.hidden=[128,128]", "model.drop_hidden=0.5",
                            "trainer.epochs=30", "seed=3", "trainer.batch_size=full", "tracking=none"]))
    validate(conf)
    assert conf["model"]["hidden"] == [128, 128]
    assert conf["model"]["drop_hidden"] == 0.5
    assert conf["seed"] == 3 and conf["trainer"]["epochs"] == 30
    assert conf["tracking"]["backend"] == "none"


def test_per_layer_drop_hidden_list_validates(compose) -> None:
    validate(to_dict(compose(["model.hidden=[64,32]", "model.drop_hidden=[0.5,0.3]"])))


@pytest.mark.parametrize(
    "override",
    ["trainer.epochs=abc", "seed=abc", "model.hidden=abc", "trainer.lr=fast", "model.drop_input=lots",
     "progress=maybe"],
)
def test_type_errors_on_override_raise(compose, override) -> None:
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        compose([override])


def test_unknown_key_on_override_raises(compose) -> None:
    with pytest.raises(ConfigCompositionException, match="trainer.foo"):
        compose(["trainer.foo=1"])


def test_unknown_group_option_raises(compose) -> None:
    with pytest.raises(HydraException, match="dataset/nope"):
        compose(["dataset=nope"])


# --- validate: one bad value at a time ---------------------------------------------------------


def assert_refused(cfg: dict, key: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert f"'{key}'" in message, message
    assert shown in message, message


@pytest.mark.parametrize(
    ("section", "name", "value", "key", "shown"),
    [
        ("model", "drop_input", 1.0, "model.drop_input", "1.0"),
        ("model", "drop_input", -0.1, "model.drop_input", "-0.1"),
        ("model", "drop_hidden", 1.5, "model.drop_hidden", "1.5"),
        ("model", "drop_hidden", [0.5, 1.0], "model.drop_hidden[1]", "1.0"),
        ("model", "drop_hidden", [0.5], "model.drop_hidden", "[0.5]"),
        ("model", "hidden", [0], "model.hidden[0]", "0"),
        ("model", "hidden", [64, -1], "model.hidden[1]", "-1"),
        ("model", "hidden", [], "model.hidden", "[]"),
        ("model", "activation", "swish", "model.activation", "'swish'"),
        ("model", "init", "orthogonal", "model.init", "'orthogonal'"),
        ("model", "width_multiplier", 0.0, "model.width_multiplier", "0.0"),
        ("dataset", "name", "nope", "dataset.name", "'nope'"),
        ("trainer", "epochs", 0, "trainer.epochs", "0"),
        ("trainer", "lr", 0.0, "trainer.lr", "0.0"),
        ("trainer", "lr", -0.5, "trainer.lr", "-0.5"),
        ("trainer", "batch_size", 0, "trainer.batch_size", "0"),
        ("trainer", "batch_size", -8, "trainer.batch_size", "-8"),
        ("trainer", "batch_size", "big", "trainer.batch_size", "'big'"),
        ("trainer", "batch_size", 1.5, "trainer.batch_size", "1.5"),
        ("trainer", "optimizer", "rmsprop", "trainer.optimizer", "'rmsprop'"),
        ("trainer", "momentum", 1.0, "trainer.momentum", "1.0"),
        ("trainer", "patience", 0, "trainer.patience", "0"),
        ("trainer", "blas_threads", 0, "trainer.blas_threads", "0"),
        ("search", "sampler", "bayes", "search.sampler", "'bayes'"),
        ("search", "n_trials", 0, "search.n_trials", "0"),
        ("tracking", "backend", "wandb", "tracking.backend", "'wandb'"),
        ("two_phase", "fit_metric", "val_acc", "two_phase.fit_metric", "'val_acc'"),
    ],
)
def test_validate_names_key_and_value(cfg, section, name, value, key, shown) -> None:
    cfg[section][name] = value
    assert_refused(cfg, key, shown)


def test_validate_refuses_an_unknown_task(cfg) -> None:
    cfg["task"] = "dance"
    assert_refused(cfg, "task", "'dance'")


@pytest.mark.parametrize("batch_size", ["full", 1, 64, "32"])
def test_validate_accepts_whole_batch_sizes_and_full(cfg, batch_size) -> None:
    cfg["trainer"]["batch_size"] = batch_size
    validate(cfg)


# --- the search space --------------------------------------------------------------------------


def test_default_search_space_is_valid(defaults) -> None:
    space = defaults["search"]["space"]
    assert {entry["key"] for entry in space.values()} == {"model.drop_input", "model.drop_hidden"}
    for name, entry in space.items():
        validate_space_entry(name, entry)


@pytest.mark.parametrize(
    ("entry", "key", "shown"),
    [
        ({"key": "model.drop_input", "low": 0.6, "high": 0.2}, "search.space.x", "low=0.6"),
        ({"key": "model.drop_hidden", "low": 0.0, "high": 1.5}, "search.space.x", "1.5"),
        ({"key": "trainer.lr", "low": 0.0, "high": 0.1, "log": True}, "search.space.x.low", "0.0"),
        ({"key": "trainer.lr", "type": "gaussian", "low": 0.0, "high": 1.0}, "search.space.x.type", "'gaussian'"),
        ({"key": "seed", "low": 0, "high": 10}, "search.space.x.key", "'seed'"),
        ({"low": 0.0, "high": 1.0}, "search.space.x.key", "None"),
        ({"key": "trainer.lr", "low": "a", "high": 1.0}, "search.space.x.low", "'a'"),
        ({"key": "trainer.optimizer", "type": "categorical", "choices": []}, "search.space.x.choices", "[]"),
        ("model.drop_input", "search.space.x", "'model.drop_input'"),
    ],
)
def test_bad_search_space_entry_is_refused(cfg, entry, key, shown) -> None:
    cfg["search"]["space"] = {"x": entry}
    assert_refused(cfg, key, shown)


@pytest.mark.parametrize(
    "entry",
    [
        {"key": "trainer.lr", "type": "float", "low": 1e-4, "high": 0.1, "log": True},
        {"key": "trainer.batch_size", "type": "int", "low": 16, "high": 256, "step": 16},
        {"key": "model.activation", "type": "categorical", "choices": ["relu", "tanh"]},
    ],
)
def test_good_search_space_entries_validate(cfg, entry) -> None:
    cfg["search"]["space"] = {"x": entry}
    validate(cfg)
