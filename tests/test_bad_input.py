"""Bad input through the real command, after a real study exists: one clear paragraph, a non-zero
exit, no traceback, and the study and the MLflow runs already recorded stay exactly as they were.
Also: interrupted runs end KILLED, and the same config and seed give the same numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_dropout_lab
from dropout_lab import search

STUDY = [
    "+experiment=two_phase", "dataset=moons", "dataset.n_samples=300", "two_phase.widths=[8]",
    "two_phase.phase1_epochs=3", "two_phase.final_seeds=1", "trainer.epochs=3", "search.n_trials=2",
    "progress=false",
]


def _snapshot(cwd: Path) -> tuple:
    """What is recorded: every trial (number, state, value) and every MLflow run (id, status)."""
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="two_phase", storage=search.open_storage(str(cwd / "optuna.journal")))
    trials = tuple((t.number, t.state.name, t.value) for t in study.trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "", max_results=1000)
    return trials, tuple(sorted((r.info.run_id, r.info.status) for r in runs))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, tuple]:
    cwd = tmp_path_factory.mktemp("recorded")
    proc = run_dropout_lab(STUDY, cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd, _snapshot(cwd)


def _file_under_a_file(tmp: Path) -> list[str]:
    (tmp / "plain_file").write_text("x")
    return [f"hydra.run.dir={tmp / 'plain_file' / 'out'}"]


# name: (extra overrides builder, text the message must contain)
CASES = {
    "drop_input_negative": (lambda t: ["model.drop_input=-0.1"], "model.drop_input"),
    "drop_hidden_one": (lambda t: ["model.drop_hidden=1.0"], "model.drop_hidden"),
    "width_negative": (lambda t: ["two_phase.widths=[-4]"], "two_phase.widths[0]"),
    "epochs_zero": (lambda t: ["trainer.epochs=0"], "trainer.epochs"),
    "lr_zero": (lambda t: ["trainer.lr=0"], "trainer.lr"),
    "lr_not_a_number": (lambda t: ["trainer.lr=fast"], "trainer.lr"),
    "unknown_dataset_name": (lambda t: ["dataset.name=imagenet"], "dataset.name"),
    "unknown_sampler": (lambda t: ["search.sampler=bayes"], "search.sampler"),
    "unknown_pruner": (lambda t: ["search.pruner=early"], "search.pruner"),
    "n_trials_zero": (lambda t: ["search.n_trials=0"], "search.n_trials"),
    "search_range_reversed": (lambda t: ["search.space.drop_hidden.low=0.9", "search.space.drop_hidden.high=0.1"],
                              "search.space.drop_hidden"),
    "search_range_past_one": (lambda t: ["search.space.drop_hidden.high=1.5"], "search.space.drop_hidden"),
    "storage_scheme": (lambda t: ["search.storage=redis://127.0.0.1/0"], "search.storage"),
    "storage_folder_missing": (lambda t: [f"search.storage={t / 'nope' / 'x.journal'}"], "search.storage"),
    "tracking_folder_missing": (lambda t: [f"tracking.uri=sqlite:///{t / 'nope' / 'm.db'}"], "tracking.uri"),
    "tracking_scheme": (lambda t: ["tracking.uri=ftp://127.0.0.1/x"], "tracking.uri"),
    "output_dir_unwritable": (_file_under_a_file, "plain_file"),
    "missing_csv": (lambda t: ["dataset=csv", f"dataset.path={t / 'none.csv'}", "dataset.target=y"], "none.csv"),
    "grid_without_steps": (lambda t: ["search.sampler=grid"], "search.space"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_paragraph_and_loses_nothing(recorded, tmp_path, case):
    cwd, before = recorded
    build, needle = CASES[case]
    proc = run_dropout_lab([*STUDY, *build(tmp_path)], cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "Traceback" not in out
    message = proc.stderr.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    assert needle in message, message
    assert _snapshot(cwd) == before


def test_sigterm_ends_the_mlflow_run_killed(tmp_path):
    from mlflow import MlflowClient

    args = ["dataset=moons", "dataset.n_samples=5000", "trainer.epochs=400"]
    proc = subprocess.Popen([sys.executable, "-m", "dropout_lab", *args], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The first progress line comes after the store was created and the run started: only then may
    # this test open the store (two processes creating one SQLite store at once would race).
    first = proc.stdout.readline()
    while first and not first.startswith("train epoch"):
        first = proc.stdout.readline()
    assert first, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    runs = client.search_runs([client.get_experiment_by_name("dropout_lab").experiment_id], "")
    assert [r.info.status for r in runs] == ["KILLED"]


def test_same_config_and_seed_give_identical_summary_metrics(tmp_path):
    args = ["dataset=digits", "model.hidden=[32]", "model.drop_hidden=0.5", "model.drop_input=0.2",
            "trainer.epochs=3", "tracking=none", "progress=false", "seed=7"]
    summaries = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert run_dropout_lab(args, tmp_path / name).returncode == 0
        path = next((tmp_path / name).glob("outputs/*/*/summary.json"))
        summaries.append(json.loads(path.read_text()))
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
    assert summaries[0]["history"] == [{**r, "seconds": summaries[0]["history"][i]["seconds"]}
                                       for i, r in enumerate(summaries[1]["history"])]


def test_single_worker_seeded_study_repeats_its_trial_sequence(tmp_path):
    args = [*STUDY, "search.n_trials=4", "tracking=none", "search.sampler=tpe", "search.n_startup_trials=2"]
    sequences = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert run_dropout_lab(args, tmp_path / name).returncode == 0
        import optuna

        study = optuna.load_study(study_name="two_phase",
                                  storage=search.open_storage(str(tmp_path / name / "optuna.journal")))
        sequences.append([(t.params, t.value) for t in study.trials])
    assert sequences[0] == sequences[1]
