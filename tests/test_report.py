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

from conftest import cli_env, run_in_new_folder, small_two_phase, two_phase_summary

SMALL = small_two_phase(final_seeds=3, n_trials=4)


def run_report(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m dropout_lab.report ARGS`` in ``cwd``: the real command line."""
    return subprocess.run([sys.executable, "-m", "dropout_lab.report", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A folder holding one small two-phase run: mlflow.db, optuna.journal and outputs/."""
    return run_in_new_folder(tmp_path_factory, "report", SMALL)


@pytest.fixture(scope="module")
def summary(run_dir) -> dict:
    return two_phase_summary(run_dir)


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


# --- plain runs grouped by config keys (--group-by) ---------------------------------------------

SWEEP = ["-m", "experiment_name=sweep", "dataset=moons", "dataset.n_samples=200", "model.hidden=[8]",
         "trainer.epochs=3", "tracking.log_models=false", "tracking.log_plots=false", "progress=false",
         "model.drop_hidden=0.0,0.5", "seed=0,1,2"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A folder holding a real Hydra multirun of six single runs: 2 hidden drop rates x 3 seeds."""
    return run_in_new_folder(tmp_path_factory, "sweep", SWEEP)


@pytest.fixture(scope="module")
def sweep_summaries(sweep_dir) -> list[dict]:
    paths = sorted(sweep_dir.glob("multirun/sweep/*/*/summary.json"))
    assert len(paths) == 6
    return [json.loads(p.read_text()) for p in paths]


def test_group_by_gives_mean_std_and_t_interval_of_each_group(sweep_dir, sweep_summaries, monkeypatch):
    import numpy as np
    from scipy import stats

    from dropout_lab import report

    monkeypatch.chdir(sweep_dir)
    src = report.load_runs(None, None)
    groups = report.build_group_tables(src, ["model.drop_hidden"], ["test_acc", "test_loss"])["groups"][1]
    assert list(groups["model.drop_hidden"]) == [0.0, 0.5] and list(groups["runs"]) == [3, 3]
    for _, row in groups.iterrows():
        accs = np.array([s["metrics"]["test_acc"] for s in sweep_summaries
                         if s["config"]["model"]["drop_hidden"] == row["model.drop_hidden"]])
        half = stats.t.ppf(0.975, 2) * accs.std(ddof=1) / np.sqrt(3)
        assert [row[f"test_acc_{k}"] for k in ("n", "mean", "std", "ci95", "ci_low", "ci_high")] == pytest.approx(
            [3, accs.mean(), accs.std(ddof=1), half, accs.mean() - half, accs.mean() + half])


def test_group_by_runs_table_lists_every_run_in_key_and_seed_order(sweep_dir, sweep_summaries, monkeypatch):
    from dropout_lab import report

    monkeypatch.chdir(sweep_dir)
    runs = report.build_group_tables(report.load_runs(None, "sweep"), ["model.drop_hidden"], ["test_acc"])["runs"][1]
    assert list(zip(runs["model.drop_hidden"], runs["seed"])) == [(r, s) for r in (0.0, 0.5) for s in (0, 1, 2)]
    assert set(runs["run_id"]) == {s["mlflow"]["run_id"] for s in sweep_summaries}
    assert set(runs["status"]) == {"completed"} and set(runs["epochs"]) == {3}


def test_group_by_metric_falls_back_to_the_last_logged_value(sweep_dir, monkeypatch):
    from dropout_lab import report

    monkeypatch.chdir(sweep_dir)
    src = report.load_runs(None, None)
    runs = report.grouped_runs_table(src, ["model.drop_hidden"], ["samples_per_s", "test_acc"])
    assert list(runs["samples_per_s"]) == pytest.approx(
        [src.runs.set_index("run_id").loc[r, "metrics.samples_per_s"] for r in runs["run_id"]])


def test_group_by_cli_writes_markdown_tables_and_the_plot(sweep_dir, tmp_path):
    proc = run_report(["--group-by", "model.drop_hidden", "--format", "markdown", "--out", str(tmp_path),
                       "--plots", str(tmp_path)], sweep_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("### sweep: test_acc, test_loss by model.drop_hidden over 6 runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.md", "groups.png", "report.md", "runs.md"]
    groups = (tmp_path / "groups.md").read_text().splitlines()
    assert groups[2].startswith("| model.drop_hidden | runs | test_acc_n | test_acc_mean |")
    assert [line.split(" | ")[1] for line in groups[4:]] == ["3", "3"]
    assert (tmp_path / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_by_filter_selects_runs(sweep_dir):
    proc = run_report(["--group-by", "seed", "--filter", "params.`model.drop_hidden` = '0.5'", "--format", "csv"],
                      sweep_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("seed,runs,test_acc_n") and [line.split(",")[:2] for line in lines[2:5]] == [
        ["0", "1"], ["1", "1"], ["2", "1"]]


def test_group_by_several_experiments_adds_an_experiment_column(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from dropout_lab import report

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name, accs in (("fixed_n", (0.6, 0.7)), ("fixed_pn", (0.5, 0.4))):
        eid = client.create_experiment(name)
        for seed, acc in enumerate(accs):
            run = client.create_run(eid)
            client.log_param(run.info.run_id, "model.drop_hidden", "0.5")
            client.log_param(run.info.run_id, "seed", str(seed))
            client.log_metric(run.info.run_id, "final_test_acc", acc)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(report.ConfigError, match="several experiments have runs.*fixed_n \\(2 runs\\)"):
        report.load_runs(None, None)
    tables = report.build_group_tables(report.load_runs(None, "fixed_n,fixed_pn"), ["model.drop_hidden"], ["test_acc"])
    groups = tables["groups"][1]
    assert list(groups["experiment"]) == ["fixed_n", "fixed_pn"]
    assert list(groups["test_acc_mean"]) == pytest.approx([0.65, 0.45])


def test_group_by_plot_lines_split_only_on_keys_with_several_values_at_one_x():
    import pandas as pd

    from dropout_lab.report import line_keys

    # p*n fixed: the multiplier is a function of the rate; a grid: the width takes two values at each rate.
    fixed_pn = pd.DataFrame({"model.drop_hidden": [0.0, 0.5], "model.width_multiplier": [1.0, 2.0]})
    grid = pd.DataFrame({"model.drop_hidden": [0.0, 0.0, 0.5, 0.5], "model.hidden": ["[8]", "[16]"] * 2})
    assert line_keys(fixed_pn, ["model.drop_hidden", "model.width_multiplier"]) == []
    assert line_keys(grid, ["model.drop_hidden", "model.hidden"]) == ["model.hidden"]
    assert line_keys(fixed_pn.assign(experiment="a"), ["model.drop_hidden"]) == ["experiment"]


@pytest.mark.parametrize("args, message", [
    (["--group-by", "model.nope"], "no run of sweep has 'model.nope'. Keys that vary across the runs: model.drop_hidden, seed (and "),
    (["--group-by", "seed", "--metrics", "nope"], "no run of sweep logged 'nope'. Metrics there: "),
    (["--group-by", "seed", "--experiment", "sweep,nope"], "no MLflow experiment named 'nope'"),
    (["--group-by", "seed", "--filter", "params.seed = "], "MLflow refused '--filter params.seed = '"),
    (["--group-by", "seed", "--filter", "params.seed = '9'"], "no run of sweep in 'sqlite:///mlflow.db' matches"),
])
def test_group_by_bad_input_is_one_line_naming_what_exists(sweep_dir, monkeypatch, capsys, args, message):
    from dropout_lab.report import main

    monkeypatch.chdir(sweep_dir)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == "" and "Traceback" not in captured.err
