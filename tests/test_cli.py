"""End-to-end tests of the real command line, `python -m dropout_lab`, each in its own working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_env

SMALL_RUN = ["dataset=moons", "dataset.n_samples=400", "model.hidden=[16]", "trainer.epochs=3"]
EXIT_BAD_INPUT = 2


def only_run_dir(cwd: Path) -> Path:
    """The one run folder ``outputs/<experiment>/<time>/`` the command wrote under ``cwd``."""
    summaries = list((cwd / "outputs").glob("*/*/summary.json"))
    assert len(summaries) == 1, summaries
    return summaries[0].parent


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


# --- a single run ------------------------------------------------------------------------------


def test_help_exits_zero_and_lists_the_groups(run_cli, tmp_path) -> None:
    proc = run_cli(["--help"], tmp_path)
    assert_ok(proc)
    for text in ("dataset:", "trainer:", "tracking:", "moons", "seed_xor"):
        assert text in proc.stdout


def test_single_run_without_tracking_writes_summary_and_model(run_cli, tmp_path) -> None:
    proc = run_cli([*SMALL_RUN, "tracking=none"], tmp_path)
    assert_ok(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["split", "loss", "acc"])
    assert [line.split()[0] for line in lines[header + 2: header + 5]] == ["train", "val", "test"]

    run_dir = only_run_dir(tmp_path)
    assert run_dir.parent.name == "dropout_lab"  # outputs/<experiment_name>/<time>/
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["dataset"]["name"] == "moons"
    assert summary["config"]["model"]["hidden"] == [16]
    assert summary["config"]["trainer"]["epochs"] == 3
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(summary["metrics"])
    assert all(isinstance(v, float) for v in summary["metrics"].values())
    assert summary["wall_seconds"] > 0 and summary["samples_per_s"] > 0
    assert [row["epoch"] for row in summary["history"]] == [1, 2, 3]
    assert not (tmp_path / "mlflow.db").exists()

    with np.load(run_dir / "model.npz", allow_pickle=False) as f:
        assert {"W0", "b0", "W1", "b1", "sizes"} <= set(f.files)
    # The saved model reproduces the reported test accuracy.
    from dropout_lab.data import load_dataset
    from dropout_lab.model import MLP
    from dropout_lab.trainer import evaluate

    model = MLP.load(str(run_dir / "model.npz"))
    data = load_dataset(summary["config"]["dataset"], summary["config"]["model"]["dtype"])
    _, test_acc = evaluate(model, data.X_test, data.y_test, model.spec.loss)
    assert test_acc == pytest.approx(summary["metrics"]["test_acc"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from MLflow's SQLAlchemy store
def test_single_run_with_default_mlflow_tracking_records_a_finished_run(run_cli, tmp_path) -> None:
    proc = run_cli(SMALL_RUN, tmp_path)
    assert_ok(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (tmp_path / "mlflow.db").is_file()  # the default store lives in the working directory

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dropout_lab")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.name"] == "moons"
    for key in ("train_loss", "val_loss", "val_acc"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3], key
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["mlflow"]["run_id"] == run.info.run_id
    assert run.data.metrics["final_test_acc"] == pytest.approx(summary["metrics"]["test_acc"])


def test_seed_xor_experiment_learns_xor(run_cli, tmp_path) -> None:
    proc = run_cli(["+experiment=seed_xor", "tracking=none"], tmp_path)
    assert_ok(proc)
    assert "predictions" in proc.stdout
    run_dir = only_run_dir(tmp_path)
    assert run_dir.parent.name == "seed_xor"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [round(p) for p in summary["predictions"]] == [0, 1, 1, 0]


# --- bad input: one paragraph, non-zero exit, no traceback ---------------------------------------


def write_corrupt_idx(folder: Path) -> tuple[str, str]:
    folder.mkdir()
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(b"this is not an IDX file at all")
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01")
    return f"dataset.path={folder}", str(images)


def write_csv_without_target(path: Path) -> tuple[str, ...]:
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    return (f"dataset.path={path}", "dataset.target=label")


BAD_INPUTS = {
    "drop_rate_1.5": (lambda tmp: ["model.drop_hidden=1.5"], "model.drop_hidden", "1.5"),
    "width_0": (lambda tmp: ["model.hidden=[0]"], "model.hidden[0]", "0"),
    "unknown_activation": (lambda tmp: ["model.activation=swish"], "model.activation", "swish"),
    "unknown_init": (lambda tmp: ["model.init=orthogonal"], "model.init", "orthogonal"),
    "unknown_dataset": (lambda tmp: ["dataset=nope"], "dataset", "nope"),
    "non_numeric_epochs": (lambda tmp: ["trainer.epochs=abc"], "trainer.epochs", "abc"),
    "missing_idx_folder": (lambda tmp: ["dataset=idx", f"dataset.path={tmp / 'no_such_dir'}"],
                           "dataset.path", "no_such_dir"),
    "corrupt_idx_file": (lambda tmp: ["dataset=idx", write_corrupt_idx(tmp / "mnist")[0]],
                         "dataset.path", "train-images-idx3-ubyte"),
    "csv_without_target": (lambda tmp: ["dataset=csv", *write_csv_without_target(tmp / "table.csv")],
                           "dataset.target", "label"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_paragraph_and_non_zero_exit(run_cli, tmp_path, case) -> None:
    build, key, value = BAD_INPUTS[case]
    args = ["dataset=moons", "trainer.epochs=1", "tracking=none", *build(tmp_path)]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == EXIT_BAD_INPUT, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error:"), message
    assert len(message.splitlines()) == 1, message  # one paragraph
    assert key in message and value in message, message
    assert not list(tmp_path.glob("outputs/*/*/summary.json"))


# --- the package outside the source tree -------------------------------------------------------


def can_build_without_isolation() -> bool:
    """Whether this environment already has pyproject.toml's build backend (setuptools >= 68 that can
    build wheels); a fresh virtual environment of Python 3.11 has an older setuptools and no wheel, and
    then pip must fetch the build requirements itself."""
    from importlib.metadata import PackageNotFoundError, version

    def release(name: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in version(name).split(".")[:2] if part.isdigit())
        except PackageNotFoundError:
            return ()

    setuptools = release("setuptools")
    return setuptools >= (68,) and (setuptools >= (70, 1) or release("wheel") != ())


def test_plain_install_works_outside_the_source_tree(repo_root, tmp_path) -> None:
    # Build from a copy of what the package is made of, so the build's own scratch files
    # (build/, *.egg-info) never land in the working tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (repo_root / name).exists():
            shutil.copy2(repo_root / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("dropout_lab", "conf"):
        shutil.copytree(repo_root / folder, source / folder, ignore=ignore)
    target = tmp_path / "site"
    isolation = ["--no-build-isolation"] if can_build_without_isolation() else []
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
         "--target", str(target), str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "dropout_lab" / "conf" / "config.yaml").is_file()
    assert (target / "dropout_lab" / "conf" / "experiment" / "seed_xor.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(PYTHONPATH=str(target))
    where = subprocess.run(
        [sys.executable, "-c", "import dropout_lab, dropout_lab.__main__ as m; "
                               "print(dropout_lab.__file__); print(m.config_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert where.returncode == 0, where.stderr
    module_file, conf = (Path(line).resolve() for line in where.stdout.split())
    assert module_file.is_relative_to(target.resolve())
    assert conf.is_relative_to(target.resolve())

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dropout_lab", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)

    assert_ok(run(["--help"]))
    proc = run([*SMALL_RUN, "trainer.epochs=1", "tracking=none"])
    assert_ok(proc)
    summary = json.loads((only_run_dir(elsewhere) / "summary.json").read_text())
    assert summary["status"] == "completed"


# --- the documented commands -------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_verbatim(repo_root) -> None:
    readme = (repo_root / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines()
                if line.startswith("python -m venv .venv") and "pytest" in line]
    assert len(commands) == 1, commands
    ci = repo_root / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    script = ci.read_text().splitlines()
    assert script[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in script
    assert commands[0] in script
