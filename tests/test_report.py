"""The report command and the figures: tables read back from a real two-phase run's MLflow store and
Optuna journal, files written in each format, and bad input reported without a traceback (and
without creating a store)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_dropout_lab

SMALL = [
    "+experiment=two_phase", "dataset=moons", "dataset.n_samples=300",
    "trainer.epochs=4", "two_phase.widths=[8,16]", "two_phase.phase1_epochs=8",
    "two_phase.final_seeds=3", "search.n_trials=4", "progress=false",
]


def run_report(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m dropout_lab.report ARGS`` in ``cwd``: the real command line."""
    return subprocess.run([sys.executable, "-m", "dropout_lab.report", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A folder holding one small two-phase run: mlflow.db, optuna.journal and outputs/."""
    cwd = tmp_path_factory.mktemp("report")
    proc = run_dropout_lab(SMALL, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


@pytest.fixture(scope="module")
def summary(run_dir) -> dict:
    (path,) = run_dir.glob("outputs/two_phase/*/summary.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def study(run_dir):
    import optuna

    from dropout_lab import search

    return optuna.load_study(study_name="two_phase", storage=search.open_storage(str(run_dir / "optuna.journal")))


@pytest.fixture
def tables(run_dir, monkeypatch):
    """The report's tables, built in this process from the run's default stores."""
    from dropout_lab import report

    monkeypatch.chdir(run_dir)
    src = report.load_sources(None, None, None, None)
    return {name: df for name, (_, df) in report.build_tables(src, top=2).items()}


# --- tables -------------------------------------------------------------------------------------


def test_phase1_table_has_each_width_with_its_accuracies(tables, summary):
    phase1 = tables["phase1"]
    rows = {r["width"]: r for r in summary["phase1"]["rows"]}
    assert list(phase1["width"]) == sorted(rows)
    for r in phase1.itertuples():
        assert r.train_acc == pytest.approx(rows[r.width]["train_acc"])
        assert r.val_acc == pytest.approx(rows[r.width]["val_acc"])
        assert r.epochs == rows[r.width]["epochs"]
        assert r.fit == rows[r.width]["fit"]
    assert list(phase1.loc[phase1["chosen"], "width"]) == [summary["phase1"]["width"]]


def test_trials_table_has_every_trial_with_rates_value_state_and_epochs(tables, study):
    trials = tables["trials"]
    assert list(trials["number"]) == [t.number for t in study.trials]
    for t in study.trials:
        row = trials[trials["number"] == t.number].iloc[0]
        assert row["state"] == t.state.name.lower()
        assert row["drop_input"] == pytest.approx(t.params["drop_input"])
        assert row["drop_hidden"] == pytest.approx(t.params["drop_hidden"])
        assert row["epochs"] == t.user_attrs["epochs"]
        if t.value is not None:
            assert row["val_acc"] == pytest.approx(t.value)


def test_trials_table_reports_pruned_and_failed_trials_with_their_reason(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from dropout_lab.report import trials_table

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for state, attrs in [(optuna.trial.TrialState.COMPLETE, {"epochs": 10}),
                         (optuna.trial.TrialState.PRUNED, {"epochs": 3, "reason": "pruned at epoch 3"}),
                         (optuna.trial.TrialState.FAIL, {"epochs": 7, "failure_reason": "diverged: loss is nan"})]:
        trial = study.ask({"drop_input": optuna.distributions.FloatDistribution(0, 0.5)})
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, 0.9 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    table = trials_table(study, "val_acc")
    assert list(table["state"]) == ["complete", "pruned", "fail"]
    assert list(table["epochs"]) == [10, 3, 7]
    assert table["reason"].iloc[1] == "pruned at epoch 3"
    assert table["reason"].iloc[2] == "diverged: loss is nan"
    assert table["val_acc"].iloc[0] == 0.9 and math.isnan(table["val_acc"].iloc[1])


def test_top_table_is_the_best_completed_trials_best_first(tables, study):
    from optuna.trial import TrialState

    top = tables["top"]
    values = sorted((t.value for t in study.trials if t.state == TrialState.COMPLETE), reverse=True)
    assert list(top["val_acc"]) == pytest.approx(values[:2])
    assert list(top["rank"]) == [1, 2]
    assert top["val_acc"].iloc[0] == pytest.approx(study.best_value)


def test_comparison_matches_the_job_summary_and_a_manual_t_interval(tables, summary):
    import numpy as np
    from scipy import stats

    seeds, comparison = tables["seeds"], tables["comparison"]
    assert sorted(seeds["seed"].unique()) == summary["final"]["seeds"]
    for variant in ("baseline", "dropout"):
        accs = seeds.loc[seeds["variant"] == variant].sort_values("seed")["test_acc"].to_numpy()
        assert list(accs) == pytest.approx([r["test_acc"] for r in summary["final"]["runs"][variant]])
        row = comparison[(comparison["variant"] == variant) & (comparison["metric"] == "test_acc")].iloc[0]
        half = stats.t.ppf(0.975, len(accs) - 1) * accs.std(ddof=1) / np.sqrt(len(accs))
        assert (row["n"], row["mean"], row["std"], row["ci95"]) == pytest.approx(
            (3, accs.mean(), accs.std(ddof=1), half))
        assert row["ci_low"] == pytest.approx(accs.mean() - half)
        assert row["mean"] == pytest.approx(summary["final"][variant]["test_acc"]["mean"])
    pivot = seeds.pivot(index="seed", columns="variant", values="test_acc")
    diff = (pivot["dropout"] - pivot["baseline"]).to_numpy()
    row = comparison[(comparison["variant"] == "dropout - baseline") & (comparison["metric"] == "test_acc")].iloc[0]
    assert (row["mean"], row["std"]) == pytest.approx((diff.mean(), diff.std(ddof=1)))
    assert row["mean"] == pytest.approx(summary["improvement_test_acc"])


# --- the command line ---------------------------------------------------------------------------


def test_cli_prints_tables_and_writes_csv_files(run_dir, tmp_path, summary):
    import pandas as pd

    proc = run_report(["--out", str(tmp_path / "tables"), "--top", "3"], run_dir)
    assert proc.returncode == 0, proc.stderr
    for title in ("Phase 1: accuracy by hidden width", "Optuna trials of study 'two_phase'", "Top 3 configurations",
                  "Final runs: test set per seed", "over 3 seeds: mean, std, 95% t-interval"):
        assert title in proc.stdout
    names = {p.name for p in (tmp_path / "tables").iterdir()}
    assert names == {"phase1.csv", "trials.csv", "top.csv", "seeds.csv", "comparison.csv"}
    trials = pd.read_csv(tmp_path / "tables" / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2, 3]
    comparison = pd.read_csv(tmp_path / "tables" / "comparison.csv")
    acc = comparison[(comparison["variant"] == "baseline") & (comparison["metric"] == "test_acc")].iloc[0]
    assert acc["ci95"] == pytest.approx(summary["final"]["baseline"]["test_acc"]["ci95"])


def test_cli_markdown_writes_one_file_per_table_and_a_report(run_dir, tmp_path):
    proc = run_report(["--format", "markdown", "--out", str(tmp_path)], run_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("### Phase 1")
    trials = (tmp_path / "trials.md").read_text().splitlines()
    assert trials[2].startswith("| number |") and trials[3].startswith("| ---: |")
    assert len([line for line in trials if line.startswith("| ") and line[2].isdigit()]) == 4
    report_md = (tmp_path / "report.md").read_text()
    assert report_md.count("### ") == 5 and "| dropout - baseline | paired by seed | test_acc |" in report_md


def test_cli_plots_writes_the_figures(run_dir, tmp_path):
    proc = run_report(["--plots", str(tmp_path), "--format", "csv"], run_dir)
    assert proc.returncode == 0, proc.stderr
    for name in ("phase1_capacity.png", "learning_curves.png", "drop_rates.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in ("optuna_history.html", "optuna_contour.html"):
        html = (tmp_path / name).read_text()
        assert "cdn.plot.ly" in html and "two_phase" in html and len(html) < 200_000


# --- figures the job itself writes --------------------------------------------------------------


def test_two_phase_logs_search_figures_on_the_parent_run(run_dir, summary):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(summary["mlflow"]["parent_run_id"])}
    assert {"drop_rates.png", "optuna_history.html", "optuna_contour.html", "learning_curves.png",
            "phase1_capacity.png"} <= artifacts
    out = Path(summary["final"]["output_dir"])
    assert (out / "drop_rates.png").stat().st_size > 5000


def test_drop_rates_plot_marks_pruned_and_failed_trials(tmp_path):
    import pandas as pd

    from dropout_lab.plots import drop_rates

    trials = pd.DataFrame({
        "number": [0, 1, 2, 3], "value": [0.8, 0.9, None, None],
        "params_drop_input": [0.2, 0.1, 0.3, 0.4], "params_drop_hidden": [0.5, 0.3, 0.6, 0.7],
        "state": ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"],
    })
    path = drop_rates(trials, tmp_path / "rates.png", "rates", "val_acc (fraction correct)")
    assert path.read_bytes()[:4] == b"\x89PNG"
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # closed: nothing left on a display-less backend


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_experiment_lists_the_experiments(run_dir):
    proc = run_report(["--experiment", "nope"], run_dir)
    assert proc.returncode == 2
    assert "no MLflow experiment named 'nope'" in proc.stderr and "two_phase (" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_unknown_study_lists_the_studies(run_dir, monkeypatch, capsys):
    from dropout_lab.report import main

    monkeypatch.chdir(run_dir)
    assert main(["--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no Optuna study named 'nope'" in err and "two_phase (4 trials)" in err


def test_empty_experiment_is_reported(run_dir, monkeypatch, capsys):
    from mlflow import MlflowClient

    from dropout_lab.report import main

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    if client.get_experiment_by_name("nothing_yet") is None:
        client.create_experiment("nothing_yet")
    monkeypatch.chdir(run_dir)
    assert main(["--experiment", "nothing_yet"]) == 2
    err = capsys.readouterr().err
    assert "'nothing_yet'" in err and "is empty" in err and "two_phase (" in err


@pytest.mark.parametrize("args, message", [
    (["--storage", "missing.journal"], "no Optuna storage at '--storage missing.journal'"),
    (["--storage", "sqlite:///missing.db"], "no Optuna storage at '--storage sqlite:///missing.db'"),
    (["--tracking-uri", "sqlite:///missing.db"], "no MLflow store at '--tracking-uri sqlite:///missing.db'"),
    ([], "nothing to report"),
])
def test_missing_store_is_reported_and_not_created(tmp_path, monkeypatch, capsys, args, message):
    from dropout_lab.report import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_store_of_the_other_kind_is_refused(run_dir, monkeypatch, capsys):
    from dropout_lab.report import main

    monkeypatch.chdir(run_dir)
    before = (run_dir / "mlflow.db").stat().st_size
    assert main(["--storage", "sqlite:///mlflow.db"]) == 2
    assert "is not an Optuna storage" in capsys.readouterr().err
    assert (run_dir / "mlflow.db").stat().st_size == before


def test_journal_alone_gives_the_trial_tables_and_creates_no_mlflow_store(run_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from dropout_lab.report import main

    shutil.copy(run_dir / "optuna.journal", tmp_path / "optuna.journal")
    monkeypatch.chdir(tmp_path)
    assert main(["--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "# trials: Optuna trials of study 'two_phase' (val_acc maximised" in out
    assert "number,drop_hidden,drop_input,width_multiplier,val_acc,state,epochs" in out and "# top:" in out
    assert "# phase1" not in out and "# comparison" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.journal"]
