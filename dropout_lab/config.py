"""The config schema (Structured Configs registered in Hydra's ConfigStore) and its validation.

The YAML files in ``conf/`` fill these dataclasses, so OmegaConf checks types on every override
(``trainer.epochs=abc`` is refused) and :func:`validate` checks ranges and cross-field rules before
anything runs. Every problem is a :class:`~dropout_lab.errors.ConfigError` naming key, value and what
is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from dropout_lab.errors import ConfigError, bad_value

TASKS = ("train", "two_phase", "compare")
SAMPLERS = ("tpe", "random", "cmaes", "gp", "grid", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
FIT_METRICS = ("train_acc", "train_loss")
OBJECTIVES = ("val_acc", "val_loss")
PARAM_TYPES = ("float", "int", "categorical")


@dataclass
class DatasetConfig:
    name: str = "mnist1d"
    path: Optional[str] = None
    images: Optional[str] = None
    labels: Optional[str] = None
    test_images: Optional[str] = None
    test_labels: Optional[str] = None
    target: Optional[str] = None
    n_samples: int = 1000
    noise: float = 0.2
    n_features: int = 20
    n_informative: int = 10
    n_classes: int = 2
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    standardize: bool = True
    max_train: Optional[int] = None


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    init: str = "he"
    drop_input: float = 0.0
    # A number, or one number per hidden layer.
    drop_hidden: Any = 0.0
    # Multiplies every hidden width (Srivastava et al. 2014 widen a dropout net to n / keep_prob).
    width_multiplier: float = 1.0
    loss: str = "auto"
    dtype: str = "float32"


@dataclass
class TrainerConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    max_norm: Optional[float] = None
    # A whole number, or "full" for full-batch gradient descent.
    batch_size: Any = 64
    epochs: int = 30
    iterations: Optional[int] = None
    eval_every: int = 1
    patience: Optional[int] = None
    reduction: str = "mean"
    eval_train_max: int = 10000
    # BLAS threads while training; null: one for small networks (up to 8M multiply-adds per batch in
    # the largest layer), the library's default for larger ones.
    blas_threads: Optional[int] = None


@dataclass
class TwoPhaseConfig:
    # Explicit widths to try in phase 1; when null, start_width doubling up to max_width.
    widths: Optional[list[int]] = None
    start_width: int = 32
    growth: float = 2.0
    max_width: int = 1024
    # The network "fits" when fit_metric reaches fit_threshold (acc >= threshold, loss <= threshold).
    fit_metric: str = "train_acc"
    fit_threshold: float = 1.0
    # Epoch budget of each phase-1 network; null: trainer.epochs.
    phase1_epochs: Optional[int] = None
    final_seeds: int = 3


@dataclass
class SearchConfig:
    study_name: str = "${experiment_name}"
    # null: a journal file in the working directory (safe for several local workers).
    storage: Optional[str] = None
    sampler: str = "tpe"
    pruner: str = "median"
    n_trials: int = 20
    timeout: Optional[float] = None
    n_workers: int = 1
    # RDB storages (postgresql://...): a running trial's worker records a heartbeat this often; a trial
    # without one for 3x as long is failed (its worker died) and its work is redone by another worker.
    heartbeat_seconds: int = 10
    objective: str = "val_acc"
    # Trial 0 is always the 2015 post's advice: input 0.2, hidden 0.5.
    enqueue_advice: bool = True
    n_startup_trials: int = 5
    # name -> {key, type, low, high, log, step, choices}: what the search varies.
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    backend: str = "mlflow"
    uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "${experiment_name}"
    # Buffered per-epoch metrics are written at most this often (seconds), and at the end.
    flush_seconds: float = 5.0
    # A writer process records runs while training goes on; false: every call waits for the store.
    asynchronous: bool = True
    log_models: bool = True
    log_plots: bool = True
    # Also a learning-curve PNG per phase-1 width and per trial (MLflow's own charts show the same metrics).
    run_plots: bool = False


@dataclass
class CompareArm:
    label: str = ""
    # Config keys under model., trainer. or dataset. -> values, applied on top of the composed config;
    # nested ({model: {drop_input: 0.2}}) or dotted ({model.drop_input: 0.2}).
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompareConfig:
    # task=compare: configuration a and b, each trained with seeds seed, seed+1, ..., seed+seeds-1.
    seeds: int = 5
    a: CompareArm = field(default_factory=lambda: CompareArm(label="a"))
    b: CompareArm = field(default_factory=lambda: CompareArm(label="b"))


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    two_phase: TwoPhaseConfig = field(default_factory=TwoPhaseConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    task: str = "train"
    experiment_name: str = "dropout_lab"
    seed: int = 0
    progress: bool = True


def register_configs() -> None:
    """Register the schema so the YAML files in ``conf/`` are typed.

    One schema for the whole config (``config_schema``, first in ``conf/config.yaml``'s defaults)
    types every group: no per-group schema entries, which would show up as choices of each group
    and, copied by Hydra for every group it lists, make ``--help`` slower.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=Config)


def to_dict(cfg: DictConfig | dict) -> dict:
    """The resolved config as a plain dict (interpolations resolved)."""
    if isinstance(cfg, dict):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError as exc:
        # ${oc.env:NAME} without NAME set (+cluster=postgres reads its URLs so): name the variable.
        missing = re.search(r"Environment variable '([^']+)' not found", str(exc))
        if missing is None:
            raise
        name, key = missing.group(1), getattr(exc, "full_key", None) or "a config key"
        raise ConfigError(
            f"the environment variable {name} is not set, and '{key}' is read from it (${{oc.env:{name}}}). "
            f"Set it on this machine (export {name}=...), or give '{key}=VALUE' on the command line."
        ) from None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values), for MLflow params and tables."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _number(key: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, integer: bool = False, allowed: str = "") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise bad_value(key, value, allowed)


def batch_size_of(value: Any) -> int | None:
    """``trainer.batch_size`` as an int, or None for ``full``."""
    if isinstance(value, str):
        if value.strip().lower() == "full":
            return None
        try:
            value = int(value)
        except ValueError:
            raise bad_value("trainer.batch_size", value, "a whole number >= 1, or 'full'") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value("trainer.batch_size", value, "a whole number >= 1, or 'full'")
    return value


def validate(cfg: dict) -> None:
    """Check ranges and cross-field rules of a resolved config; raise ConfigError on the first problem."""
    from dropout_lab.data import DATASETS
    from dropout_lab.model import ACTIVATIONS, DTYPES, INITS, LOSSES, expand_drop_hidden, check_drop_rate

    if cfg["task"] not in TASKS:
        raise bad_value("task", cfg["task"], " | ".join(TASKS))
    _number("seed", cfg["seed"], low=0, integer=True, allowed="a whole number >= 0")

    d = cfg["dataset"]
    if d["name"] not in DATASETS:
        raise bad_value("dataset.name", d["name"], " | ".join(DATASETS))

    m = cfg["model"]
    hidden = m["hidden"]
    if not isinstance(hidden, list) or not hidden:
        raise bad_value("model.hidden", hidden, "a non-empty list of widths, e.g. [256, 256]")
    for i, h in enumerate(hidden):
        _number(f"model.hidden[{i}]", h, low=1, integer=True, allowed="a whole number of units >= 1")
    for key, options in [("activation", ACTIVATIONS), ("init", INITS), ("loss", LOSSES), ("dtype", DTYPES)]:
        if m[key] not in options:
            raise bad_value(f"model.{key}", m[key], " | ".join(options))
    check_drop_rate("model.drop_input", m["drop_input"])
    expand_drop_hidden(m["drop_hidden"], len(hidden))
    _number("model.width_multiplier", m["width_multiplier"], low=0, low_open=True, allowed="a number > 0")

    t = cfg["trainer"]
    from dropout_lab.trainer import OPTIMIZERS, REDUCTIONS

    if t["optimizer"] not in OPTIMIZERS:
        raise bad_value("trainer.optimizer", t["optimizer"], " | ".join(OPTIMIZERS))
    _number("trainer.lr", t["lr"], low=0, low_open=True, high=1e6, allowed="a finite number > 0")
    _number("trainer.momentum", t["momentum"], low=0, high=1, high_open=True, allowed="a number in [0, 1)")
    _number("trainer.lr_decay", t["lr_decay"], low=0, low_open=True, high=1, allowed="a number in (0, 1]")
    _number("trainer.weight_decay", t["weight_decay"], low=0, allowed="a number >= 0")
    if t["max_norm"] is not None:
        _number("trainer.max_norm", t["max_norm"], low=0, low_open=True, allowed="null (off) or a number > 0")
    batch_size_of(t["batch_size"])
    _number("trainer.epochs", t["epochs"], low=1, integer=True, allowed="a whole number >= 1")
    if t["iterations"] is not None:
        _number("trainer.iterations", t["iterations"], low=1, integer=True, allowed="null or a whole number >= 1")
    _number("trainer.eval_every", t["eval_every"], low=1, integer=True, allowed="a whole number >= 1")
    if t["patience"] is not None:
        _number("trainer.patience", t["patience"], low=1, integer=True, allowed="null (off) or a whole number >= 1")
    if t["reduction"] not in REDUCTIONS:
        raise bad_value("trainer.reduction", t["reduction"], " | ".join(REDUCTIONS))
    _number("trainer.eval_train_max", t["eval_train_max"], low=1, integer=True, allowed="a whole number >= 1")
    if t["blas_threads"] is not None:
        _number("trainer.blas_threads", t["blas_threads"], low=1, integer=True,
                allowed="null (automatic) or a whole number of threads >= 1")

    p = cfg["two_phase"]
    if p["widths"] is not None:
        if not p["widths"]:
            raise bad_value("two_phase.widths", p["widths"], "null (use start_width/growth) or a non-empty list")
        for i, w in enumerate(p["widths"]):
            _number(f"two_phase.widths[{i}]", w, low=1, integer=True, allowed="a whole number of units >= 1")
    _number("two_phase.start_width", p["start_width"], low=1, integer=True, allowed="a whole number >= 1")
    _number("two_phase.growth", p["growth"], low=1, low_open=True, allowed="a number > 1")
    _number("two_phase.max_width", p["max_width"], low=p["start_width"], integer=True,
            allowed=f"a whole number >= two_phase.start_width ({p['start_width']})")
    if p["fit_metric"] not in FIT_METRICS:
        raise bad_value("two_phase.fit_metric", p["fit_metric"], " | ".join(FIT_METRICS))
    if p["fit_metric"] == "train_acc":
        _number("two_phase.fit_threshold", p["fit_threshold"], low=0, low_open=True, high=1,
                allowed="a training accuracy in (0, 1] when fit_metric is train_acc")
    else:
        _number("two_phase.fit_threshold", p["fit_threshold"], low=0, low_open=True,
                allowed="a training loss > 0 when fit_metric is train_loss")
    if p["phase1_epochs"] is not None:
        _number("two_phase.phase1_epochs", p["phase1_epochs"], low=1, integer=True, allowed="null or a whole number >= 1")
    _number("two_phase.final_seeds", p["final_seeds"], low=1, integer=True, allowed="a whole number >= 1")

    s = cfg["search"]
    if s["sampler"] not in SAMPLERS:
        raise bad_value("search.sampler", s["sampler"], " | ".join(SAMPLERS))
    if s["pruner"] not in PRUNERS:
        raise bad_value("search.pruner", s["pruner"], " | ".join(PRUNERS))
    if s["objective"] not in OBJECTIVES:
        raise bad_value("search.objective", s["objective"], " | ".join(OBJECTIVES))
    _number("search.n_trials", s["n_trials"], low=1, integer=True, allowed="a whole number >= 1")
    if s["timeout"] is not None:
        _number("search.timeout", s["timeout"], low=0, low_open=True, allowed="null or a number of seconds > 0")
    _number("search.n_workers", s["n_workers"], low=1, high=256, integer=True, allowed="a whole number from 1 to 256")
    _number("search.heartbeat_seconds", s["heartbeat_seconds"], low=1, high=3600, integer=True,
            allowed="a whole number of seconds from 1 to 3600")
    _number("search.n_startup_trials", s["n_startup_trials"], low=0, integer=True, allowed="a whole number >= 0")
    if s["storage"] is not None and not str(s["storage"]).strip():
        raise bad_value("search.storage", s["storage"], "null (the local journal file optuna.journal), a journal "
                        "file path, or an RDB URL such as postgresql://USER@HOST:5432/DB")
    if not isinstance(s["study_name"], str) or not s["study_name"].strip():
        raise bad_value("search.study_name", s["study_name"], "a non-empty name")
    for name, spec in (s["space"] or {}).items():
        validate_space_entry(name, spec)

    tr = cfg["tracking"]
    if tr["backend"] not in ("mlflow", "none"):
        raise bad_value("tracking.backend", tr["backend"], "mlflow | none")
    if tr["backend"] == "mlflow" and not str(tr["uri"]).strip():
        raise bad_value("tracking.uri", tr["uri"], "an MLflow tracking URI: sqlite:///FILE.db or http://HOST:PORT")
    _number("tracking.flush_seconds", tr["flush_seconds"], low=0, allowed="a number of seconds >= 0")

    c = cfg.get("compare")
    if c is not None:
        _number("compare.seeds", c["seeds"], low=1, integer=True, allowed="a whole number of seeds >= 1")
        for arm in ("a", "b"):
            compare_overrides(cfg, arm)


COMPARE_SECTIONS = ("model", "trainer", "dataset")


def compare_overrides(cfg: dict, arm: str) -> dict[str, Any]:
    """``compare.<arm>.overrides`` as dotted keys -> values, each key checked to be an existing
    ``model.``, ``trainer.`` or ``dataset.`` key of the config."""
    where = f"compare.{arm}.overrides"
    overrides = cfg["compare"][arm].get("overrides") or {}
    if not isinstance(overrides, dict):
        raise bad_value(where, overrides, "a mapping of config keys to values, e.g. {model.drop_hidden: 0.5}")
    known = set(flatten({s: cfg[s] for s in COMPARE_SECTIONS}))
    flat = flatten(overrides)
    for key in flat:
        if key not in known:
            section = key.split(".")[0]
            examples = sorted(k for k in known if k.startswith(section + ".")) if section in COMPARE_SECTIONS else []
            raise ConfigError(
                f"unknown key '{where}.{key}': allowed: existing keys under model., trainer. or dataset.; "
                + (f"under {section}.: {', '.join(examples)}." if examples else
                   "e.g. model.drop_input, model.drop_hidden, trainer.lr, dataset.max_train.")
            )
    return flat


def validate_space_entry(name: str, spec: Any) -> None:
    """One ``search.space`` entry: ``{key, type, low, high, log, step}`` or ``{key, type: categorical, choices}``."""
    where = f"search.space.{name}"
    if not isinstance(spec, dict):
        raise bad_value(where, spec, "a mapping such as {key: model.drop_input, low: 0.0, high: 0.5}")
    key = spec.get("key")
    if not isinstance(key, str) or key.split(".")[0] not in ("model", "trainer", "dataset"):
        raise bad_value(f"{where}.key", key, "a config key under model., trainer. or dataset., e.g. trainer.lr")
    kind = spec.get("type", "float")
    if kind not in PARAM_TYPES:
        raise bad_value(f"{where}.type", kind, " | ".join(PARAM_TYPES))
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise bad_value(f"{where}.choices", choices, "a non-empty list of values")
        return
    low, high = spec.get("low"), spec.get("high")
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_value(f"{where}.{bound}", value, "a number")
    if not low <= high:
        raise ConfigError(f"invalid range for '{where}': got low={low!r} > high={high!r}; allowed: low <= high.")
    if spec.get("log") and low <= 0:
        raise bad_value(f"{where}.low", low, "a number > 0 when log: true")
    if key in ("model.drop_input", "model.drop_hidden") and not (0 <= low and high < 1):
        raise ConfigError(
            f"invalid range for '{where}': got [{low}, {high}]; allowed: drop rates within [0, 1)."
        )
