"""``+experiment=compare``: two configurations over N seeds, their statistics checked against the runs
MLflow recorded; the override sets validated before anything trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_dropout_lab

SMALL = ["+experiment=compare", "dataset=moons", "dataset.n_samples=300", "model.hidden=[16]",
         "trainer.epochs=5", "compare.seeds=3", "progress=false"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("compare")
    proc = run_dropout_lab(SMALL, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = cwd.glob("outputs/compare/*/summary.json")
    return cwd, proc, json.loads(path.read_text())


def _children(cwd: Path, parent_id: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compare")
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_each_seed_and_arm_is_a_tagged_child_run_with_its_overrides(compared):
    cwd, _, s = compared
    runs = _children(cwd, s["mlflow"]["parent_run_id"])
    seen = sorted((r.data.tags["variant"], int(r.data.tags["seed"])) for r in runs)
    assert seen == [(arm, seed) for arm in ("a", "b") for seed in (0, 1, 2)]
    for r in runs:
        assert r.data.tags["phase"] == "compare"
        arm = r.data.tags["variant"]
        assert r.data.tags["label"] == {"a": "no dropout", "b": "dropout"}[arm]
        assert (r.data.params["model.drop_input"], r.data.params["model.drop_hidden"]) == \
            {"a": ("0.0", "0.0"), "b": ("0.2", "0.5")}[arm]
        assert r.data.params["seed"] == r.data.tags["seed"]


def test_statistics_match_a_manual_computation_from_the_runs(compared):
    import numpy as np
    from scipy import stats

    cwd, _, s = compared
    runs = _children(cwd, s["mlflow"]["parent_run_id"])
    acc = {(r.data.tags["variant"], int(r.data.tags["seed"])): r.data.metrics["final_test_acc"] for r in runs}
    loss = {(r.data.tags["variant"], int(r.data.tags["seed"])): r.data.metrics["final_test_loss"] for r in runs}

    def expected(values):
        v = np.asarray(values)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        return pytest.approx((v.mean(), v.std(ddof=1), half, len(v)))

    for metric, table in (("test_acc", acc), ("test_loss", loss)):
        for arm in ("a", "b"):
            got = s[arm][metric]
            assert (got["mean"], got["std"], got["ci95"], got["n"]) == expected([table[arm, i] for i in range(3)])
        diff = s["difference"][metric]
        assert (diff["mean"], diff["std"], diff["ci95"], diff["n"]) == \
            expected([table["b", i] - table["a", i] for i in range(3)])


def test_prints_the_comparison_and_the_mlflow_command(compared):
    _, proc, s = compared
    out = proc.stdout
    assert "Compare over 3 seeds 0..2" in out
    assert "a: no dropout" in out and "b: dropout" in out and "b - a (paired)" in out
    assert f"b - a: {s['difference']['test_acc']['mean'] * 100:+.2f} points of test accuracy" in out
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1" in out
    assert "Traceback" not in out + proc.stderr


def test_parent_run_holds_the_summary_and_learning_curves(compared):
    from mlflow import MlflowClient

    cwd, _, s = compared
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    parent = client.get_run(s["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["phase"] == "parent" and parent.data.tags["task"] == "compare"
    assert parent.data.metrics["difference_test_acc"] == pytest.approx(s["difference"]["test_acc"]["mean"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "summary.txt", "config.yaml", "learning_curves.png"} <= artifacts


def test_report_reads_the_same_comparison(compared, monkeypatch):
    from dropout_lab import report

    cwd, _, s = compared
    monkeypatch.chdir(cwd)
    tables = report.build_tables(report.load_sources(None, None, None, None))
    assert set(tables) == {"seeds", "comparison"}
    comparison = tables["comparison"][1]
    for variant, key in (("a", "a"), ("b", "b"), ("b - a", "difference")):
        row = comparison[(comparison["variant"] == variant) & (comparison["metric"] == "test_acc")].iloc[0]
        assert (row["mean"], row["ci95"]) == pytest.approx((s[key]["test_acc"]["mean"], s[key]["test_acc"]["ci95"]))


# --- configuration ------------------------------------------------------------------------------


def test_overrides_change_only_their_arm(compose):
    from dropout_lab.compare import arm_config
    from dropout_lab.config import to_dict

    cfg = to_dict(compose(["+experiment=compare", "++compare.b.overrides.trainer.lr=0.01",
                           "+compare.a.overrides={model.hidden: [32, 32]}"]))
    a, b = arm_config(cfg, "a"), arm_config(cfg, "b")
    assert (a["model"]["hidden"], a["model"]["drop_hidden"], a["trainer"]["lr"]) == ([32, 32], 0.0, 0.05)
    assert (b["model"]["hidden"], b["model"]["drop_hidden"], b["trainer"]["lr"]) == ([256, 256], 0.5, 0.01)
    assert cfg["model"]["drop_hidden"] == 0.0 and cfg["trainer"]["lr"] == 0.05


@pytest.mark.parametrize("override, message", [
    ("+compare.b.overrides.search.n_trials=3", "unknown key 'compare.b.overrides.search.n_trials'"),
    ("+compare.a.overrides.model.dropout=0.3", "unknown key 'compare.a.overrides.model.dropout'"),
    ("compare.seeds=0", "invalid value for 'compare.seeds'"),
])
def test_bad_compare_config_is_refused_by_validation(compose, override, message):
    from dropout_lab.config import to_dict, validate
    from dropout_lab.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(to_dict(compose(["+experiment=compare", override])))


def test_bad_override_value_exits_2_before_training(tmp_path, run_cli):
    proc = run_cli(["+experiment=compare", "compare.b.overrides.model.drop_input=1.5", "tracking=none"], tmp_path)
    assert proc.returncode == 2
    assert "compare.b.overrides make an invalid config" in proc.stderr and "model.drop_input" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("outputs/compare/*/summary.json"))
