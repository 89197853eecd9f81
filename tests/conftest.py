"""Shared fixtures: the repository root, the real command line, the composed Hydra config, and small
two-phase runs written into a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The command line must not inherit settings that change how Hydra or MLflow behave.
_SCRUBBED_ENV = ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m dropout_lab` subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(extra)
    return env


def run_dropout_lab(args: Sequence[str], cwd: Path, *, env: dict[str, str] | None = None,
                    timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m dropout_lab ARGS` in ``cwd`` and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "dropout_lab", *args],
        cwd=cwd, env=env if env is not None else cli_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def small_two_phase(*, final_seeds: int, n_trials: int) -> list[str]:
    """The overrides of a small two-phase run on moons: phase 1 over widths 8 and 16, then ``n_trials``
    search trials and ``final_seeds`` seeds of the final comparison, all of a few epochs."""
    return [
        "+experiment=two_phase", "dataset=moons", "dataset.n_samples=300",
        "trainer.epochs=4", "two_phase.widths=[8,16]", "two_phase.phase1_epochs=8",
        f"two_phase.final_seeds={final_seeds}", f"search.n_trials={n_trials}", "progress=false",
    ]


def run_in_new_folder(tmp_path_factory: pytest.TempPathFactory, name: str, args: Sequence[str]) -> Path:
    """A new temporary folder (named after ``name``) in which `python -m dropout_lab ARGS` ran and succeeded;
    it holds the run's stores (mlflow.db, optuna.journal) and its outputs/ or multirun/ folder."""
    cwd = tmp_path_factory.mktemp(name)
    proc = run_dropout_lab(args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def two_phase_summary(run_dir: Path) -> dict:
    """The summary.json of the one two-phase job that ran in ``run_dir``."""
    (path,) = run_dir.glob("outputs/two_phase/*/summary.json")
    return json.loads(path.read_text())


def compose_config(overrides: Sequence[str] = ()):
    """The real config (conf/ plus the typed schema) composed with ``overrides``, as a DictConfig."""
    from hydra import compose, initialize_config_dir

    from dropout_lab.__main__ import config_dir
    from dropout_lab.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml, conf/ and dropout_lab/)."""
    assert (REPO_ROOT / "pyproject.toml").is_file()
    return REPO_ROOT


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(args, cwd, env=None, timeout=300)``: the real command line, as a CompletedProcess."""
    return run_dropout_lab


@pytest.fixture
def compose() -> Callable[..., object]:
    """``compose(overrides)``: the composed config (a DictConfig) for a list of Hydra overrides."""
    return compose_config
