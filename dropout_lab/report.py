"""``python -m dropout_lab.report``: the results of a two-phase or compare run as tables (and figures).

The tables come straight from the stores the run wrote: ``mlflow.search_runs`` (phase-1 widths, the
final or compare runs per seed) and ``study.trials_dataframe()`` (every Optuna trial, the top-k
configurations); the baseline-vs-dropout (or a-vs-b) comparison adds mean, standard deviation and a
95% t-interval over seeds, and the same for the difference paired by seed. Printed as text, CSV or
Markdown; ``--out DIR`` writes one file per table, ``--plots DIR`` the figures.

``--group-by KEYS`` reports plain runs instead (single runs of a Hydra multirun, for example): the
runs ``mlflow.search_runs`` finds, grouped by the values of config keys (MLflow params), with the
mean, standard deviation and 95% t-interval of each metric per group, and a line plot of each metric
against the first key.

Looking never writes: a store that does not exist is reported (with what does exist), not created.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dropout_lab.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE = "optuna.journal"
FORMATS = ("table", "csv", "markdown")
EXIT_BAD_INPUT = 2
# Comparison variants in reading order: the reference first, the challenger second.
VARIANT_ORDER = ("baseline", "dropout", "a", "b")
METRICS = {"final_test_acc": "test_acc", "final_test_loss": "test_loss"}


@dataclass
class Sources:
    """What the report reads: the MLflow runs of one parent run and the Optuna study (either may be absent)."""

    tracking_uri: str | None = None
    experiment: str | None = None
    parent: Any = None               # the parent run's row of mlflow.search_runs (a pandas Series)
    children: Any = None             # its child runs (a DataFrame)
    study: Any = None                # optuna.Study
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> str:
        if self.parent is not None:
            value = self.parent.get("params.search.objective")
            if isinstance(value, str) and value:
                return value
        if self.study is not None:  # the study records the config it was made with (repr'd values)
            value = self.study.user_attrs.get("signature", {}).get("search.objective")
            if isinstance(value, str) and value:
                return value.strip("'\"")
        return "value"


# ------------------------------------------------------------------------------------------------
# Opening the stores, read-only
# ------------------------------------------------------------------------------------------------

def _sqlite_tables(path: Path) -> set[str]:
    """The table names of an existing SQLite file, opened read-only (never created)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError:
        return set()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def open_tracking(uri: str, explicit: bool):
    """An MlflowClient on ``uri``; None when the default store is simply not here."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            if not explicit:
                return None
            raise ConfigError(
                f"no MLflow store at '--tracking-uri {uri}': the file {str(path)!r} does not exist (in "
                f"{os.getcwd()}). Point --tracking-uri at the sqlite:///FILE.db a run wrote (tracking.uri, "
                f"default {DEFAULT_TRACKING_URI} in the folder the run was started from)."
            )
        if "experiments" not in _sqlite_tables(path):
            raise ConfigError(
                f"'--tracking-uri {uri}': {str(path)!r} is not an MLflow store (it has no experiments table). "
                "Allowed: the sqlite:///FILE.db a dropout_lab run wrote (tracking.uri)."
            )
    elif uri.split(":", 1)[0] in ("http", "https"):
        # A server that is not there should fail at once, not after minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    elif "://" not in uri:
        raise ConfigError(
            f"unsupported '--tracking-uri {uri}'. Allowed: sqlite:///FILE.db (default {DEFAULT_TRACKING_URI}), "
            "http(s)://HOST:PORT (an MLflow tracking server), postgresql://..."
        )
    _quiet_mlflow()
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=absolute_uri(uri))
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - an unreachable server or a bad URL is the user's input
        raise ConfigError(f"cannot read the MLflow store '--tracking-uri {uri}': {_first_line(exc)}.") from None
    return client


def absolute_uri(uri: str) -> str:
    """``sqlite:///REL.db`` made absolute: MLflow caches stores by URI, so a relative one would keep
    pointing at the first folder it was opened in."""
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_optuna(url: str, explicit: bool):
    """An Optuna storage for ``url`` (a journal file or an RDB URL); None when the default file is not here."""
    from dropout_lab import search

    if "://" in url:
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            if not path.is_file():
                raise ConfigError(
                    f"no Optuna storage at '--storage {url}': the file {str(path)!r} does not exist (in "
                    f"{os.getcwd()}). Point --storage at the study storage a run used (search.storage; default "
                    f"the journal file {DEFAULT_STORAGE})."
                )
            if "studies" not in _sqlite_tables(path):
                raise ConfigError(
                    f"'--storage {url}': {str(path)!r} is not an Optuna storage (it has no studies table). "
                    f"Allowed: the storage a run used (search.storage), by default the journal file {DEFAULT_STORAGE}."
                )
        try:
            return search.open_storage(url)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("search.storage", "--storage")) from None
    path = Path(url)
    if not path.is_file():
        if not explicit:
            return None
        raise ConfigError(
            f"no Optuna storage at '--storage {url}': the file {str(path)!r} does not exist (in {os.getcwd()}). "
            f"Point --storage at the journal file a run wrote (search.storage; default {DEFAULT_STORAGE} in the "
            "folder the run was started from) or at its RDB URL."
        )
    try:
        return search.open_storage(url)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file that is not an Optuna journal
        raise ConfigError(
            f"'--storage {url}': {str(path)!r} is not an Optuna journal file ({type(exc).__name__}: "
            f"{_first_line(exc)[:200]}). Allowed: the journal file a run wrote (search.storage; default "
            f"{DEFAULT_STORAGE}) or its RDB URL."
        ) from None


def study_names(storage) -> dict[str, int]:
    """Study name -> number of trials, without the marker studies that coordinate workers."""
    import optuna

    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if not s.study_name.endswith("-lease")}


def _listing(counts: dict[str, int], unit: str) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{name} ({n} {unit}{'' if n == 1 else 's'})" for name, n in sorted(counts.items()))


def _experiment_runs(client) -> tuple[dict[str, str], dict[str, int]]:
    """Active experiments: name -> id, and name -> number of runs."""
    import mlflow

    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    counts = {name: 0 for name in experiments}
    if experiments:
        runs = mlflow.search_runs(experiment_ids=list(experiments.values()), max_results=50000)
        if not runs.empty:
            by_id = runs["experiment_id"].value_counts()
            counts = {name: int(by_id.get(eid, 0)) for name, eid in experiments.items()}
    return experiments, counts


def load_sources(tracking_uri: str | None, experiment: str | None, storage_url: str | None,
                 study: str | None, run_id: str | None = None) -> Sources:
    """Find the parent run (and its children) and the study the arguments name; ConfigError if they do not exist."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    storage_arg = storage_url or DEFAULT_STORAGE
    client = open_tracking(uri, explicit=tracking_uri is not None or experiment is not None)
    storage = open_optuna(storage_arg, explicit=storage_url is not None or study is not None)
    if client is None and storage is None:
        raise ConfigError(
            f"nothing to report in {os.getcwd()}: there is no MLflow store ({DEFAULT_TRACKING_URI}) and no Optuna "
            f"study storage ({DEFAULT_STORAGE}) here. Run the report in the folder where `python -m dropout_lab "
            "+experiment=two_phase` (or +experiment=compare) ran, or pass --tracking-uri and --storage."
        )
    src = Sources()
    if study is not None and storage is not None:
        names = study_names(storage)
        if study not in names:
            raise ConfigError(
                f"no Optuna study named {study!r} in '{storage_arg}'. Studies there: {_listing(names, 'trial')}."
            )
    if client is not None:
        import mlflow

        mlflow.set_tracking_uri(absolute_uri(uri))
        src.tracking_uri = absolute_uri(uri)
        experiments, counts = _experiment_runs(client)
        with_runs = {n: c for n, c in counts.items() if c}
        if experiment is None:
            parents = mlflow.search_runs(experiment_ids=list(experiments.values()) or ["0"],
                                         filter_string="tags.phase = 'parent'", max_results=50000)
            if study is not None and "tags.optuna_study" in parents:
                parents = parents[parents["tags.optuna_study"] == study]
            names = sorted({n for n, eid in experiments.items() if eid in set(parents["experiment_id"])})
            if len(names) != 1:
                problem = ("no experiment holds a two_phase or compare run" if not names
                           else f"several experiments hold results ({', '.join(names)})")
                raise ConfigError(
                    f"{problem} in '{uri}'{f' for study {study!r}' if study else ''}; pass --experiment NAME. "
                    f"Experiments there: {_listing(counts, 'run')}."
                )
            experiment = names[0]
        if experiment not in experiments:
            raise ConfigError(
                f"no MLflow experiment named {experiment!r} in '{uri}'. Experiments there: {_listing(counts, 'run')}."
            )
        if not counts[experiment]:
            raise ConfigError(
                f"the MLflow experiment {experiment!r} in '{uri}' is empty (no runs). Experiments with runs: "
                f"{_listing(with_runs, 'run')}."
            )
        src.experiment = experiment
        runs = mlflow.search_runs(experiment_ids=[experiments[experiment]], max_results=50000)
        phase = _col(runs, "tags.phase")
        if run_id is not None:
            parents = runs[runs["run_id"] == run_id]
            if parents.empty:
                raise ConfigError(f"no run {run_id!r} in the MLflow experiment {experiment!r}; its parent runs: "
                                  f"{', '.join(runs.loc[phase == 'parent', 'run_id']) or 'none'}.")
        else:
            parents = runs[phase == "parent"]
            if study is not None:
                parents = parents[_col(parents, "tags.optuna_study") == study]
            if parents.empty:
                raise ConfigError(
                    f"the MLflow experiment {experiment!r} has {len(runs)} runs but no two_phase or compare parent "
                    f"run (tag phase=parent){f' of study {study!r}' if study else ''}. Experiments with runs: "
                    f"{_listing(with_runs, 'run')}."
                )
        src.parent = parents.sort_values("start_time").iloc[-1]
        src.children = runs[_col(runs, "tags.mlflow.parentRunId") == src.parent["run_id"]]
        if study is None:
            tagged = src.parent.get("tags.optuna_study")
            study = tagged if isinstance(tagged, str) and tagged else None
    if study is None and storage is not None and client is None:
        names = study_names(storage)
        if len(names) != 1:
            raise ConfigError(
                f"the storage '{storage_arg}' holds {len(names)} studies; pass --study NAME. Studies there: "
                f"{_listing(names, 'trial')}."
            )
        study = next(iter(names))
    if study is not None:
        if storage is None:
            src.notes.append(f"the Optuna study {study!r} is not in this folder (no {DEFAULT_STORAGE}); pass "
                             "--storage to add its trials")
        else:
            import optuna

            names = study_names(storage)
            if study not in names:
                raise ConfigError(
                    f"the run {src.parent['run_id']} names the Optuna study {study!r}, which is not in "
                    f"'{storage_arg}'; pass the --storage it used. Studies there: {_listing(names, 'trial')}."
                )
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            src.study = optuna.load_study(study_name=study, storage=storage)
    return src


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

def _col(df, name: str):
    """Column ``name`` of ``df``, or an all-missing column when no run has that tag/metric."""
    import pandas as pd

    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def phase1_table(src: Sources):
    """Phase-1 widths (dropout off): train/validation accuracy and loss, epochs, fit, the chosen width."""
    import pandas as pd

    runs = src.children[_col(src.children, "tags.phase") == "phase1"] if src.children is not None else None
    if runs is None or runs.empty:
        return None
    table = pd.DataFrame({
        "width": pd.to_numeric(runs["tags.width"]).astype(int),
        "train_acc": _col(runs, "metrics.train_acc"), "val_acc": _col(runs, "metrics.val_acc"),
        "train_loss": _col(runs, "metrics.train_loss"), "val_loss": _col(runs, "metrics.val_loss"),
        "epochs": pd.to_numeric(_col(runs, "metrics.epoch")).astype("Int64"),
        "fit": _col(runs, "tags.fit") == "True",
    }).sort_values("width").reset_index(drop=True)
    chosen = None
    if src.study is not None and "phase1" in src.study.user_attrs:
        chosen = src.study.user_attrs["phase1"]["width"]
    elif table["fit"].any():
        chosen = int(table.loc[table["fit"], "width"].iloc[0])
    table["chosen"] = table["width"] == chosen
    return table


def trials_frame(study, **kwargs):
    """``study.trials_dataframe()`` with the objective always in a ``value`` column.

    A study with metric names (``study.set_metric_names``) calls it ``value_<name>`` instead.
    """
    df = study.trials_dataframe(**kwargs)
    names = study.metric_names or []
    return df.rename(columns={f"{prefix}_{n}": "value" for n in names for prefix in ("value", "values")})


def trials_table(study, objective: str = "value"):
    """Every trial: its parameters, value, state (complete / pruned / fail), epochs used and why it stopped."""
    import pandas as pd

    df = trials_frame(study, attrs=("number", "value", "state", "params", "user_attrs"))
    if df.empty:
        return None
    params = [c for c in df.columns if c.startswith("params_")]
    table = df[["number"] + params].rename(columns={c: c[len("params_"):] for c in params})
    table[objective] = _col(df, "value")
    table["state"] = df["state"].str.lower()
    table["epochs"] = pd.to_numeric(_col(df, "user_attrs_epochs")).astype("Int64")
    for key in ("val_acc", "test_acc"):
        if f"user_attrs_{key}" in df and key != objective:
            table[key] = df[f"user_attrs_{key}"]
    reasons = [c for c in ("user_attrs_reason", "user_attrs_failure_reason", "user_attrs_killed_reason") if c in df]
    table["reason"] = df[reasons].bfill(axis=1).iloc[:, 0] if reasons else math.nan
    return table


def top_table(study, k: int, objective: str = "value"):
    """The ``k`` best completed trials, best first."""
    from optuna.study import StudyDirection

    trials = trials_table(study, objective)
    if trials is None:
        return None
    complete = trials[(trials["state"] == "complete") & trials[objective].notna()]
    if complete.empty:
        return None
    best_first = complete.sort_values(objective, ascending=study.direction != StudyDirection.MAXIMIZE)
    top = best_first.head(k).drop(columns=["state", "reason"]).reset_index(drop=True)
    top.insert(0, "rank", range(1, len(top) + 1))
    return top


def seed_table(src: Sources):
    """The final (or compare) runs, one row per variant and seed: the latest round when a study was extended."""
    import pandas as pd

    if src.children is None:
        return None
    runs = src.children[_col(src.children, "tags.phase").isin(["final", "compare"])]
    if runs.empty:
        return None
    runs = runs.sort_values("start_time").drop_duplicates(["tags.variant", "tags.seed"], keep="last")
    table = pd.DataFrame({
        "seed": pd.to_numeric(runs["tags.seed"]).astype(int),
        "variant": runs["tags.variant"],
        "label": [_label(r) for _, r in runs.iterrows()],
        "status": _col(runs, "tags.status"),
        "epochs": pd.to_numeric(_col(runs, "metrics.epoch")).astype("Int64"),
        **{short: pd.to_numeric(_col(runs, f"metrics.{name}")) for name, short in METRICS.items()},
        "run_id": runs["run_id"],
    })
    table["_order"] = table["variant"].map({v: i for i, v in enumerate(VARIANT_ORDER)})
    return table.sort_values(["seed", "_order"]).drop(columns="_order").reset_index(drop=True)


def _label(run) -> str:
    label = run.get("tags.label")
    if isinstance(label, str) and label:
        return label
    if run.get("tags.variant") == "baseline":
        return "no dropout"
    rates = {k: run.get(f"params.model.{k}") for k in ("drop_input", "drop_hidden", "width_multiplier")}
    if rates["width_multiplier"] in ("1", "1.0"):  # the phase-1 width: nothing to say
        del rates["width_multiplier"]
    return " ".join(f"{k}={_short(v)}" for k, v in rates.items() if isinstance(v, str))


def _short(text: str) -> str:
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def interval_stats(values) -> dict[str, Any]:
    """``n``, mean, std, 95% t-interval half-width ``ci95`` and its bounds over the finite ``values``
    (None where undefined: no value, or one value for the interval)."""
    import pandas as pd

    from dropout_lab.two_phase import stats

    st = stats([float(v) for v in values if pd.notna(v)])
    half = st["ci95"]
    return {"n": st["n"], "mean": st["mean"], "std": st["std"], "ci95": half,
            "ci_low": None if half is None else st["mean"] - half,
            "ci_high": None if half is None else st["mean"] + half}


def comparison_table(seeds):
    """Mean, std and 95% t-interval over seeds of each variant's test accuracy and loss, and of the
    second variant minus the first, paired by seed."""
    import pandas as pd

    if seeds is None or seeds.empty:
        return None
    variants = [v for v in VARIANT_ORDER if v in set(seeds["variant"])]
    rows = []

    def add(variant: str, label: str, values) -> None:
        for metric in METRICS.values():
            rows.append({"variant": variant, "label": label, "metric": metric, **interval_stats(values[metric])})

    for v in variants:
        mine = seeds[seeds["variant"] == v]
        add(v, mine["label"].iloc[0], mine)
    if len(variants) == 2:
        first, second = (seeds[seeds["variant"] == v].set_index("seed") for v in variants)
        diff = (second[list(METRICS.values())] - first[list(METRICS.values())]).dropna(how="all")
        add(f"{variants[1]} - {variants[0]}", "paired by seed", diff)
    return pd.DataFrame(rows)


def build_tables(src: Sources, top: int = 5) -> dict[str, tuple[str, Any]]:
    """Name -> (title, DataFrame) for every table the sources can give, in reading order."""
    tables: dict[str, tuple[str, Any]] = {}
    objective = src.objective
    phase1 = phase1_table(src)
    if phase1 is not None:
        tables["phase1"] = ("Phase 1: accuracy by hidden width (dropout off)", phase1)
    if src.study is not None:
        from optuna.study import StudyDirection

        direction = "maximised" if src.study.direction == StudyDirection.MAXIMIZE else "minimised"
        trials = trials_table(src.study, objective)
        if trials is not None:
            counts = trials["state"].value_counts().to_dict()
            tables["trials"] = (f"Optuna trials of study {src.study.study_name!r} ({objective} {direction}; "
                                f"{', '.join(f'{n} {s}' for s, n in counts.items())})", trials)
        best = top_table(src.study, top, objective)
        if best is not None:
            tables["top"] = (f"Top {len(best)} configuration{'s' if len(best) != 1 else ''} by {objective}", best)
    seeds = seed_table(src)
    if seeds is not None:
        what = "Final runs" if "baseline" in set(seeds["variant"]) else "Compare runs"
        tables["seeds"] = (f"{what}: test set per seed (dropout off at evaluation)", seeds)
        n = seeds["seed"].nunique()
        tables["comparison"] = (f"{' vs '.join(dict.fromkeys(seeds['label']))} over {n} seed{'s' if n != 1 else ''}: "
                                "mean, std, 95% t-interval", comparison_table(seeds))
    return tables


# ------------------------------------------------------------------------------------------------
# Plain runs grouped by config keys (--group-by)
# ------------------------------------------------------------------------------------------------

DEFAULT_GROUP_METRICS = ("test_acc", "test_loss")


@dataclass
class Runs:
    """The runs a grouped report reads: one row per run of ``mlflow.search_runs`` (all experiments named)."""

    tracking_uri: str
    experiments: list[str]
    runs: Any                        # DataFrame, with an ``experiment`` column (the experiment's name)


def _split_names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def load_runs(tracking_uri: str | None, experiment: str | None, filter_string: str | None = None) -> Runs:
    """The runs of one or more experiments (``experiment`` is a comma-separated list), parent runs left out.

    Without ``experiment`` the store must hold exactly one experiment with runs. ConfigError (listing
    what exists) for a missing store, an unknown or empty experiment, a bad filter or no matching run.
    """
    import mlflow

    uri = tracking_uri or DEFAULT_TRACKING_URI
    client = open_tracking(uri, explicit=True)
    mlflow.set_tracking_uri(absolute_uri(uri))
    experiments, counts = _experiment_runs(client)
    with_runs = {n: c for n, c in counts.items() if c}
    names = _split_names(experiment)
    if not names:
        if len(with_runs) != 1:
            problem = "no experiment has runs" if not with_runs else "several experiments have runs"
            raise ConfigError(f"{problem} in '{uri}'; pass --experiment NAME (or NAME1,NAME2). "
                              f"Experiments there: {_listing(counts, 'run')}.")
        names = list(with_runs)
    for name in names:
        if name not in experiments:
            raise ConfigError(f"no MLflow experiment named {name!r} in '{uri}'. Experiments there: "
                              f"{_listing(counts, 'run')}.")
        if not counts[name]:
            raise ConfigError(f"the MLflow experiment {name!r} in '{uri}' is empty (no runs). Experiments with "
                              f"runs: {_listing(with_runs, 'run')}.")
    try:
        runs = mlflow.search_runs(experiment_ids=[experiments[n] for n in names], filter_string=filter_string or "",
                                  max_results=50000)
    except Exception as exc:  # noqa: BLE001 - a filter MLflow cannot parse is the user's input
        raise ConfigError(f"MLflow refused '--filter {filter_string}': {_first_line(exc)}") from None
    runs = runs[_col(runs, "tags.phase") != "parent"]
    if runs.empty:
        raise ConfigError(f"no run of {', '.join(names)} in '{uri}' matches"
                          f"{f' --filter {filter_string!r}' if filter_string else ''} (parent runs are left out).")
    by_id = {eid: name for name, eid in experiments.items()}
    runs = runs.assign(experiment=runs["experiment_id"].map(by_id)).reset_index(drop=True)
    return Runs(tracking_uri=absolute_uri(uri), experiments=names, runs=runs)


def _key_column(key: str) -> str:
    """The search_runs column of a group key: ``tags.X`` and ``metrics.X`` as given, anything else a param."""
    return key if key.startswith(("tags.", "params.", "metrics.")) else f"params.{key}"


def _metric_column(runs, metric: str) -> str | None:
    """A run's final value of ``metric``: ``metrics.final_<metric>`` (what runs log at their end), else
    ``metrics.<metric>`` (its last logged value)."""
    for column in (f"metrics.final_{metric}", f"metrics.{metric}"):
        if column in runs.columns and runs[column].notna().any():
            return column
    return None


def _parse_value(text: Any) -> Any:
    """An MLflow param (a string) as the number or list it was, for sorting and numeric columns."""
    import ast

    if not isinstance(text, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool) else text


def _short_key(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith(("params.", "tags.", "metrics.")) else key


def grouped_runs_table(src: Runs, keys: list[str], metrics: list[str]):
    """One row per run: experiment (with several), the group keys' values, seed, status, epochs, the metrics."""
    import pandas as pd

    runs = src.runs
    missing = [k for k in keys if _key_column(k) not in runs.columns]
    if missing:
        params = sorted(c[len("params."):] for c in runs.columns if c.startswith("params."))
        varying = [k for k in params if runs[f"params.{k}"].nunique(dropna=False) > 1]
        rest = len(params) - len(varying)
        raise ConfigError(f"'--group-by {','.join(keys)}': no run of {', '.join(src.experiments)} has "
                          f"{', '.join(repr(k) for k in missing)}. Keys that vary across the runs: "
                          f"{', '.join(varying) or 'none'}{f' (and {rest} that do not vary)' if rest else ''}.")
    columns = {m: _metric_column(runs, m) for m in metrics}
    absent = [m for m, c in columns.items() if c is None]
    if absent:
        have = sorted({c.split(".", 1)[1].removeprefix("final_") for c in runs.columns
                       if c.startswith("metrics.") and runs[c].notna().any()})
        raise ConfigError(f"'--metrics {','.join(metrics)}': no run of {', '.join(src.experiments)} logged "
                          f"{', '.join(repr(m) for m in absent)}. Metrics there: {', '.join(have) or 'none'}.")
    table = pd.DataFrame(index=runs.index)
    if len(src.experiments) > 1:
        table["experiment"] = runs["experiment"]
    for key in keys:
        values = runs[_key_column(key)].map(_parse_value)
        numeric = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        table[_short_key(key)] = pd.to_numeric(values) if numeric.all() else runs[_key_column(key)]
    table["seed"] = pd.to_numeric(_col(runs, "params.seed"), errors="coerce").astype("Int64")
    table["status"] = _col(runs, "tags.status")
    table["epochs"] = pd.to_numeric(_col(runs, "metrics.epoch"), errors="coerce").astype("Int64")
    for metric, column in columns.items():
        table[metric] = pd.to_numeric(runs[column])
    table["run_id"] = runs["run_id"]
    table = table.dropna(subset=[_short_key(k) for k in keys])
    order = (["experiment"] if len(src.experiments) > 1 else []) + [_short_key(k) for k in keys] + ["seed"]
    sort_keys = {c: table[c].map(_sort_key) for c in order}
    table = table.iloc[pd.DataFrame(sort_keys).apply(tuple, axis=1).argsort(kind="stable").to_numpy()]
    return table.reset_index(drop=True)


def _sort_key(v: Any):
    """Numbers before text, lists by their elements, missing values last."""
    import pandas as pd

    if pd.api.types.is_scalar(v) and pd.isna(v):
        return (3, 0, "")
    parsed = _parse_value(v)
    if isinstance(parsed, (int, float)):
        return (0, float(parsed), "")
    if isinstance(parsed, (list, tuple)):
        return (1, tuple(float(x) if isinstance(x, (int, float)) else math.inf for x in parsed), str(v))
    return (2, 0, str(v))


def group_table(runs_table, keys: list[str], metrics: list[str]):
    """Per combination of the group keys (and experiment): ``runs``, then for each metric the number of
    finite values ``n``, mean, std and the 95% t-interval over the group's runs (its seeds)."""
    import pandas as pd

    by = (["experiment"] if "experiment" in runs_table.columns else []) + [_short_key(k) for k in keys]
    rows = []
    for values, group in runs_table.groupby(by, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(by, values))
        row["runs"] = len(group)
        for metric in metrics:
            row.update({f"{metric}_{k}": math.nan if v is None else v for k, v in interval_stats(group[metric]).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def build_group_tables(src: Runs, keys: list[str], metrics: list[str]) -> dict[str, tuple[str, Any]]:
    """``groups`` (statistics per combination of the keys) and ``runs`` (every run), in reading order."""
    runs = grouped_runs_table(src, keys, metrics)
    if runs.empty:
        raise ConfigError(f"no run of {', '.join(src.experiments)} has a value for every one of "
                          f"{', '.join(keys)}.")
    groups = group_table(runs, keys, metrics)
    where = ", ".join(src.experiments)
    return {
        "groups": (f"{where}: {', '.join(metrics)} by {', '.join(_short_key(k) for k in keys)} over {len(runs)} runs "
                   "(mean, std, 95% t-interval over the runs of each group)", groups),
        "runs": (f"{where}: every run", runs),
    }


def write_group_plot(tables: dict[str, tuple[str, Any]], keys: list[str], metrics: list[str], out: Path,
                     title: str) -> Path:
    """``groups.png``: each metric's mean (95% t-interval bars) against the first key, one line per experiment
    and per value of any other key that takes several values at one x."""
    from dropout_lab import plots

    out.mkdir(parents=True, exist_ok=True)
    groups = tables["groups"][1]
    return plots.group_lines(groups, _short_key(keys[0]), line_keys(groups, keys), metrics, out / "groups.png", title)


def line_keys(groups, keys: list[str]) -> list[str]:
    """The columns of ``groups`` that split its points into lines when drawn against the first key: the
    experiment (with several), and every other key that takes several values at one x. A key that is a
    function of x (the width in a sweep that keeps p*n fixed) only describes the points of one line."""
    x = _short_key(keys[0])
    per_line = ["experiment"] if "experiment" in groups.columns else []
    return per_line + [k for k in (_short_key(k) for k in keys[1:])
                       if (groups.groupby(per_line + [x], dropna=False)[k].nunique(dropna=False) > 1).any()]


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    import pandas as pd

    if pd.api.types.is_scalar(v) and pd.isna(v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def to_markdown(df) -> str:
    """A GitHub Markdown table (pandas' own needs the optional tabulate package)."""
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---:" if df[c].dtype.kind in "iuf" else "---" for c in df.columns) + " |"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render(tables: dict[str, tuple[str, Any]], fmt: str) -> str:
    parts = []
    for name, (title, df) in tables.items():
        if fmt == "csv":
            parts.append(f"# {name}: {title}\n{df.to_csv(index=False).rstrip()}")
        elif fmt == "markdown":
            parts.append(f"### {title}\n\n{to_markdown(df)}")
        else:
            text = df.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4f}")
            parts.append(f"{title}\n{text}")
    return "\n\n".join(parts)


def write_tables(tables: dict[str, tuple[str, Any]], out: Path, fmt: str) -> list[Path]:
    """One file per table: ``NAME.md`` for Markdown (and ``report.md`` with all of them), else ``NAME.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, df) in tables.items():
        if fmt == "markdown":
            path = out / f"{name}.md"
            path.write_text(f"### {title}\n\n{to_markdown(df)}\n")
        else:
            path = out / f"{name}.csv"
            df.to_csv(path, index=False)
        written.append(path)
    if fmt == "markdown":
        path = out / "report.md"
        path.write_text(render(tables, "markdown") + "\n")
        written.append(path)
    return written


def write_plots(src: Sources, tables: dict[str, tuple[str, Any]], out: Path) -> list[Path]:
    """The figures the sources allow: phase-1 capacity, learning curves (first seed), drop rates, Optuna's HTML."""
    from dropout_lab import plots

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "phase1" in tables:
        df = tables["phase1"][1]
        chosen = df.loc[df["chosen"], "width"]
        written.append(plots.capacity(df.to_dict("records"), int(chosen.iloc[0]) if len(chosen) else None,
                                      out / "phase1_capacity.png", f"Phase 1 of {src.experiment}: accuracy vs width"))
    if "seeds" in tables:
        df = tables["seeds"][1]
        first = df[df["seed"] == df["seed"].min()]
        client = _client(src)
        histories = {f"{r.label} ({r.variant})": metric_history(client, r.run_id) for r in first.itertuples()}
        written.append(plots.learning_curves(histories, out / "learning_curves.png",
                                             f"{src.experiment}: {' vs '.join(first['label'])} (seed {first['seed'].iloc[0]})"))
    if src.study is not None:
        written += plots.search_figures(src.study, out, src.objective)
    return written


def _client(src: Sources):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=src.tracking_uri)


def metric_history(client, run_id: str) -> list[dict]:
    """A run's per-epoch train/validation metrics as rows ``{"epoch": e, "train_loss": ...}``."""
    rows: dict[int, dict] = {}
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
    return [rows[e] for e in sorted(rows)]


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dropout_lab.report",
        description="Tables (and figures) of a dropout_lab two-phase or compare run, read from its MLflow "
                    "experiment and Optuna study. Run it in the folder the run was started from.")
    p.add_argument("--tracking-uri", default=None,
                   help=f"the MLflow store the run wrote (default {DEFAULT_TRACKING_URI})")
    p.add_argument("--experiment", default=None,
                   help="the MLflow experiment (default: the only one holding a two_phase or compare run)")
    p.add_argument("--run", default=None, help="the parent run id (default: the experiment's latest parent run)")
    p.add_argument("--storage", default=None,
                   help=f"the Optuna study storage: a journal file or an RDB URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="the Optuna study (default: the one the parent run names)")
    p.add_argument("--format", choices=FORMATS, default="table", help="how tables are printed and written")
    p.add_argument("--out", type=Path, default=None,
                   help="also write each table to this folder (NAME.csv, or NAME.md and report.md for markdown)")
    p.add_argument("--top", type=_positive, default=5, metavar="K", help="how many best configurations (default 5)")
    p.add_argument("--plots", type=Path, default=None, metavar="DIR", help="also write the figures to this folder")
    g = p.add_argument_group(
        "plain runs grouped by config keys",
        "Report the runs of one or more experiments (single runs of a multirun, for example) grouped by the "
        "values of config keys instead of a two-phase or compare run. Reads only the MLflow store.")
    g.add_argument("--group-by", type=_names, default=None, metavar="KEYS",
                   help="comma-separated config keys (MLflow params such as model.drop_hidden,model.hidden, or "
                        "tags.NAME); the first one is the x axis of --plots")
    g.add_argument("--metrics", type=_names, default=list(DEFAULT_GROUP_METRICS), metavar="NAMES",
                   help="comma-separated metrics, each a run's final_NAME (else its last NAME) "
                        f"(default {','.join(DEFAULT_GROUP_METRICS)})")
    g.add_argument("--filter", default=None, metavar="FILTER",
                   help="an MLflow search filter for the runs, e.g. \"tags.phase = 'single'\"")
    return p


def _names(text: str) -> list[str]:
    names = _split_names(text)
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return _exit_status(report_grouped if args.group_by is not None else report_run, args)


def _exit_status(command: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run one report command and give the process exit status: 0, or EXIT_BAD_INPUT after a one-line
    ``error:`` for bad input, or 130 on Ctrl-C."""
    try:
        command(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def report_run(args: argparse.Namespace) -> None:
    """The tables (and figures) of one two-phase or compare run."""
    src = load_sources(args.tracking_uri, args.experiment, args.storage, args.study, args.run)
    tables = build_tables(src, args.top)
    if not tables:
        raise ConfigError(f"the run {src.parent['run_id'] if src.parent is not None else ''} has no phase-1, "
                          "trial, final or compare results yet.")
    print(render(tables, args.format))
    for note in src.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out is not None:
        for path in write_tables(tables, args.out, args.format):
            print(f"wrote {path}", file=sys.stderr)
    if args.plots is not None:
        for path in write_plots(src, tables, args.plots):
            print(f"wrote {path}", file=sys.stderr)


def report_grouped(args: argparse.Namespace) -> None:
    """``--group-by``: the runs of the named experiments grouped by config keys."""
    src = load_runs(args.tracking_uri, args.experiment, args.filter)
    tables = build_group_tables(src, args.group_by, args.metrics)
    print(render(tables, args.format))
    if args.out is not None:
        for path in write_tables(tables, args.out, args.format):
            print(f"wrote {path}", file=sys.stderr)
    if args.plots is not None:
        path = write_group_plot(tables, args.group_by, args.metrics, args.plots, ", ".join(src.experiments))
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
