"""``task=compare``: two configurations trained over the same N seeds, compared on the test set.

Configuration ``a`` and ``b`` are the composed config plus their ``compare.<arm>.overrides``. Both are
trained with seeds ``seed .. seed+seeds-1``; the summary gives, for each, the mean, standard deviation
and 95% t-interval of test accuracy and loss, and the same for their difference ``b - a`` paired by
seed (the same seed means the same split, initialisation stream and shuffling), so a claim like
"dropout helps here" comes with its uncertainty. Each training run is an MLflow child run (tags
``phase=compare``, ``variant=a|b``, ``label``, ``seed``) under one parent run.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

from dropout_lab.config import compare_overrides, validate
from dropout_lab.data import load_dataset
from dropout_lab.errors import ConfigError
from dropout_lab.run import Progress, chain, fit, fmt, log_curves, run_params, to_yaml, write_json
from dropout_lab.tracking import FAILED, FINISHED, closing, make_tracker, status_for_exception
from dropout_lab.two_phase import stats

ARMS = ("a", "b")
METRICS = ("test_acc", "test_loss")
EXIT_NO_RESULT = 1


def arm_config(cfg: dict, arm: str) -> dict:
    """The config of arm ``a`` or ``b``: ``cfg`` with ``compare.<arm>.overrides`` applied, validated."""
    out = copy.deepcopy(cfg)
    for key, value in compare_overrides(cfg, arm).items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    try:
        validate(out)
    except ConfigError as exc:
        raise ConfigError(f"compare.{arm}.overrides make an invalid config: {exc}") from None
    return out


def paired_differences(results: dict[str, list[dict]], metric: str) -> list[float]:
    """``b - a`` for ``metric``, seed by seed, over the seeds where both are finite."""
    a = {r["seed"]: r[metric] for r in results["a"]}
    out = []
    for r in results["b"]:
        va, vb = a.get(r["seed"]), r[metric]
        if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb):
            out.append(vb - va)
    return out


def run_compare(cfg: dict, output_dir: Path) -> int:
    """Train both arms over the seeds, write summary.json, print the comparison; returns the exit code."""
    start = time.perf_counter()
    c = cfg["compare"]
    arms = {arm: arm_config(cfg, arm) for arm in ARMS}
    labels = {arm: c[arm]["label"] or arm for arm in ARMS}
    if labels["a"] == labels["b"]:
        labels = {arm: f"{arm}: {labels[arm]}" for arm in ARMS}
    seeds = [cfg["seed"] + i for i in range(c["seeds"])]
    # The MLflow writer opens its store while the data loads.
    with closing(make_tracker(cfg)) as tracker:
        return _compare(cfg, output_dir, tracker, arms, labels, seeds, start)


def _compare(cfg: dict, output_dir: Path, tracker, arms: dict, labels: dict, seeds: list[int], start: float) -> int:
    # Each distinct dataset config is loaded once (overrides may change the data, e.g. max_train).
    datasets: dict[str, object] = {}
    data = {}
    for arm in ARMS:
        key = repr(sorted(arms[arm]["dataset"].items())) + arms[arm]["model"]["dtype"]
        if key not in datasets:
            datasets[key] = load_dataset(arms[arm]["dataset"], arms[arm]["model"]["dtype"])
            print(datasets[key].describe(), flush=True)
        data[arm] = datasets[key]

    tracker.wait_ready()
    parent = tracker.start_run(f"compare-{cfg['experiment_name']}", params=run_params(cfg),
                               tags={"phase": "parent", "task": "compare", "label_a": labels["a"],
                                     "label_b": labels["b"], "seeds": len(seeds)})
    parent.log_text(to_yaml(cfg), "config.yaml")
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    histories: dict[str, list[dict]] = {}
    try:
        for seed in seeds:
            for arm in ARMS:
                acfg = copy.deepcopy(arms[arm])
                acfg["seed"] = seed
                tags = {"phase": "compare", "variant": arm, "label": labels[arm], "seed": seed}
                with tracker.start_run(f"compare-{arm}-seed{seed}", params=run_params(acfg), tags=tags,
                                       parent=parent) as run:
                    progress = Progress(f"{arm} ({labels[arm]}) seed {seed}", acfg["trainer"]["epochs"],
                                        cfg["progress"], every_s=5.0)
                    fitted = fit(acfg, data[arm], seed, chain(progress, run.log_metrics))
                    m = fitted.metrics
                    run.set_tags({"status": m["status"], "reason": m["reason"]})
                    run.log_metrics(m["epochs"], {f"final_{k}": m[k] for k in METRICS if m[k] is not None})
                    if seed == seeds[0]:
                        histories[f"{arm}: {labels[arm]}"] = fitted.result.history
                    if m["status"] == "diverged":
                        run.end(FAILED)
                results[arm].append({"seed": seed, **{k: m[k] for k in ("status", "epochs", "train_acc", "val_acc",
                                                                         "test_acc", "test_loss")}})
                print(f"compare: {arm} ({labels[arm]}) seed {seed}  test_acc {fmt(m['test_acc'])}  "
                      f"test_loss {fmt(m['test_loss'])}  {m['status']}", flush=True)
    except BaseException as exc:
        parent.end(status_for_exception(exc))
        raise

    summary = {
        "task": "compare",
        "status": "completed",
        "dataset": cfg["dataset"]["name"],
        "seeds": seeds,
        "labels": labels,
        "overrides": {arm: compare_overrides(cfg, arm) for arm in ARMS},
        "runs": results,
        **{arm: {k: stats([r[k] for r in results[arm]]) for k in METRICS} for arm in ARMS},
        "difference": {k: stats(paired_differences(results, k)) for k in METRICS},
        "mlflow": {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name,
                   "experiment_id": tracker.experiment_id, "parent_run_id": parent.id},
        "wall_seconds": round(time.perf_counter() - start, 2),
        "config": cfg,
    }
    write_json(output_dir / "summary.json", summary)
    text = summary_text(summary)
    parent.log_artifact(output_dir / "summary.json")
    parent.log_text(text, "summary.txt")
    log_curves(parent, histories, output_dir, "learning_curves",
                f"{labels['a']} vs {labels['b']} (seed {seeds[0]})", cfg, force=True)
    means = {f"{arm}_{k}": summary[arm][k]["mean"] for arm in ARMS for k in METRICS}
    means.update({f"difference_{k}": summary["difference"][k]["mean"] for k in METRICS})
    parent.log_metrics(0, {k: v for k, v in means.items() if v is not None})
    missing = [labels[arm] for arm in ARMS if summary[arm]["test_acc"]["n"] == 0]
    parent.end(FAILED if missing else FINISHED)
    tracker.close()
    print()
    print(text)
    print(f"\nwrote {output_dir / 'summary.json'}  (wall {summary['wall_seconds']:.1f}s)")
    if tracker.ui_command():
        print(f"MLflow runs:   {tracker.ui_command()}")
    if missing:
        print(f"error: no run of {' and '.join(missing)} finished with a test result (all diverged); "
              "lower trainer.lr.", file=sys.stderr)
        return EXIT_NO_RESULT
    return 0


def summary_text(s: dict) -> str:
    """The comparison as a fixed-width table, with a one-line reading of the paired difference."""
    n = len(s["seeds"])
    labels = s["labels"]
    names = {"a": f"a: {labels['a']}", "b": f"b: {labels['b']}", "difference": "b - a (paired)"}
    width = max(14, *(len(v) for v in names.values()))
    lines = [f"Compare over {n} seed{'s' if n != 1 else ''} {s['seeds'][0]}..{s['seeds'][-1]} "
             "(test set, dropout off at evaluation); 95% CI: t-interval over seeds",
             f"{'':<{width}} {'n':>3} {'test_acc mean':>14} {'std':>8} {'95% CI':>19}  "
             f"{'test_loss mean':>14} {'std':>8} {'95% CI':>19}"]
    for row in ("a", "b", "difference"):
        cells = []
        for k in METRICS:
            st = s[row][k]
            cells.append(f"{fmt(st['mean']):>14} {fmt(st['std']):>8} {_interval(st):>19}")
        lines.append(f"{names[row]:<{width}} {s[row]['test_acc']['n']:>3} {cells[0]}  {cells[1]}")
    d = s["difference"]["test_acc"]
    if d["mean"] is not None:
        if d["ci95"] is None:
            verdict = "one paired seed: no interval; use compare.seeds >= 2"
        elif d["mean"] - d["ci95"] > 0:
            verdict = f"b ({labels['b']}) is better at 95% confidence"
        elif d["mean"] + d["ci95"] < 0:
            verdict = f"a ({labels['a']}) is better at 95% confidence"
        else:
            verdict = "the interval contains 0: no difference shown at 95% confidence"
        lines.append(f"b - a: {d['mean'] * 100:+.2f} points of test accuracy; {verdict}")
    return "\n".join(lines)


def _interval(st: dict) -> str:
    if st["mean"] is None or st["ci95"] is None:
        return "-"
    return f"[{st['mean'] - st['ci95']:.4f}, {st['mean'] + st['ci95']:.4f}]"
