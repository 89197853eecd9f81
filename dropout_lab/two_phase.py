"""Hinton's two-phase procedure, the main job of dropout_lab.

1. Capacity: with dropout off, grow the hidden width until the network fits the training data.
2. Dropout: keep that width, search the drop rates with Optuna (trial 0 is the post's advice).
3. Final: retrain the best rates and the no-dropout baseline over several seeds, compare on test.

Every stage is recorded in the Optuna study (so a rerun resumes instead of starting over, and several
worker processes share the work) and in MLflow (one parent run, a nested child run per width, trial
and final seed).
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

from dropout_lab.data import Dataset, load_dataset
from dropout_lab.errors import ConfigError
from dropout_lab.run import Progress, chain, fit, fit_seconds, fmt, log_curves, run_params, to_yaml, write_json
from dropout_lab import search
from dropout_lab.tracking import FAILED, FINISHED, closing, make_tracker, status_for_exception

EXIT_ALL_FAILED = 1


# ------------------------------------------------------------------------------------------------
# Phase 1: capacity
# ------------------------------------------------------------------------------------------------

def width_schedule(p: dict) -> list[int]:
    """Widths to try: the explicit list, or start_width * growth**k up to max_width."""
    if p["widths"]:
        return [int(w) for w in p["widths"]]
    widths, w = [], float(p["start_width"])
    while int(round(w)) <= p["max_width"]:
        widths.append(int(round(w)))
        w *= p["growth"]
    return widths


def fits(row: dict, p: dict) -> bool:
    """Whether metrics ``row`` meet the fit criterion."""
    value = row.get(p["fit_metric"])
    if value is None or not math.isfinite(value):
        return False
    if p["fit_metric"] == "train_acc":
        return value >= p["fit_threshold"]
    return value <= p["fit_threshold"]


def no_dropout(cfg: dict, width: int, epochs: int | None = None) -> dict:
    """``cfg`` with every hidden layer ``width`` units wide and dropout off."""
    c = copy.deepcopy(cfg)
    c["model"]["hidden"] = [int(width)] * len(cfg["model"]["hidden"])
    c["model"]["drop_input"] = 0.0
    c["model"]["drop_hidden"] = 0.0
    c["model"]["width_multiplier"] = 1.0
    if epochs is not None:
        c["trainer"]["epochs"] = int(epochs)
    return c


def run_phase1(cfg: dict, data: Dataset, tracker, parent, output_dir: Path) -> dict:
    """Grow the width with dropout off until the training data is fitted; returns the phase-1 record."""
    p = cfg["two_phase"]
    epochs = p["phase1_epochs"] or cfg["trainer"]["epochs"]
    rows = []
    for width in width_schedule(p):
        wcfg = no_dropout(cfg, width, epochs)
        tags = {"phase": "phase1", "width": width, "optuna_study": cfg["search"]["study_name"],
                "owner": search.owner_tag()}
        with tracker.start_run(f"phase1-width{width}", params=run_params(wcfg), tags=tags, parent=parent) as run:
            progress = Progress(f"phase 1 width {width}", epochs, cfg["progress"], every_s=5.0)
            # Stop as soon as the network fits: phase 1 only asks whether this width can.
            fitted = fit(wcfg, data, cfg["seed"], chain(progress, run.log_metrics, lambda e, r: fits(r, p)))
            m = fitted.metrics
            row = {"width": width, **{k: m[k] for k in ("train_acc", "train_loss", "val_acc", "val_loss",
                                                        "test_acc", "test_loss", "epochs", "status")}}
            row["fit"] = fits(m, p)
            run.set_tags({"fit": row["fit"], "status": m["status"]})
            log_curves(run, {f"width {width}": fitted.result.history}, output_dir, f"phase1-width{width}",
                        f"Phase 1, width {width}, dropout off", cfg, per_run=True)
            rows.append(row)
        print(f"phase 1: width {width:>5}  train_acc {row['train_acc']:.4f}  val_acc {fmt(row['val_acc'])}  "
              f"epochs {row['epochs']}  {'fits' if row['fit'] else 'does not fit'}", flush=True)
        if row["fit"]:
            break
    fitted_rows = [r for r in rows if r["fit"]]
    if fitted_rows:
        chosen, fit_ok = fitted_rows[0], True
    else:
        # No width fits within the budget: take the best-fitting one and say so everywhere.
        key = (lambda r: r["train_acc"]) if p["fit_metric"] == "train_acc" else (lambda r: -r["train_loss"])
        chosen, fit_ok = max(rows, key=key), False
        print(f"phase 1: no width up to {rows[-1]['width']} reached {p['fit_metric']} "
              f"{'>=' if p['fit_metric'] == 'train_acc' else '<='} {p['fit_threshold']}; using the best-fitting "
              f"width {chosen['width']} ({p['fit_metric']} {chosen[p['fit_metric']]:.4f}), marked fit=false.",
              flush=True)
    return {"rows": rows, "width": chosen["width"], "fit": fit_ok, "baseline": chosen}


# ------------------------------------------------------------------------------------------------
# Phase 2: the Optuna search (run by every worker process)
# ------------------------------------------------------------------------------------------------

def phase2_worker(cfg: dict, data: Dataset, width: int, parent_id: str | None, worker: int = 0,
                  threads: int | None = None, tracker=None) -> None:
    """Run trials until the study has ``search.n_trials`` finished ones (or the timeout passes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    storage = search.open_storage(search.storage_url(cfg))
    study = search.open_study(cfg, storage)
    # Each process needs its own sampler stream, or two workers would propose the same values.
    # A lone worker keeps the configured seed, so a single-worker study is reproducible.
    others = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
              if t.user_attrs.get("owner") != search.owner_tag()]
    offset = worker if worker or not others else os.getpid()
    if offset:
        study.sampler = search.make_sampler(cfg, seed_offset=offset)
    if tracker is not None:
        _trials(cfg, data, width, tracker, tracker.handle(parent_id), study, storage, worker)
        return
    with closing(make_tracker(cfg)) as tracker:
        _trials(cfg, data, width, tracker, tracker.handle(parent_id), study, storage, worker)


def _trials(cfg: dict, data: Dataset, width: int, tracker, parent, study, storage, worker: int) -> None:
    """This worker's trials, until the study has ``search.n_trials`` finished ones (or the timeout passes)."""
    import optuna

    space = cfg["search"]["space"]
    objective_key = cfg["search"]["objective"]
    n_trials = cfg["search"]["n_trials"]
    timeout = cfg["search"]["timeout"]
    deadline = time.monotonic() + timeout if timeout else math.inf
    label = f"worker {worker} " if cfg["search"]["n_workers"] > 1 else ""

    def objective(trial: optuna.Trial) -> float:
        values = search.suggest(trial, space)
        tcfg = search.trial_config(cfg, space, values, width)
        trial.set_user_attr("owner", search.owner_tag())
        tags = {"phase": "search", "optuna_study": study.study_name, "trial_number": trial.number,
                "owner": search.owner_tag()}
        run = tracker.start_run(f"trial-{trial.number}", params=run_params(tcfg), tags=tags, parent=parent)
        epochs_seen = [0]

        def link_run(wait: bool = False) -> None:
            # The writer creates the MLflow run while training starts: its id is recorded on the trial
            # (for the dashboard, and to end it KILLED if this worker dies) as soon as it is known.
            if run.key is not None and "mlflow_run_id" not in trial.user_attrs:
                run_id = run.id if wait else run.known_id()
                if run_id:
                    trial.set_user_attr("mlflow_run_id", run_id)

        def report(epoch: int, row: dict) -> None:
            epochs_seen[0] = epoch
            link_run()
            run.log_metrics(epoch, row)
            value = row.get(objective_key)
            if value is not None and math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} with {objective_key} {value:.4f}")

        try:
            fitted = fit(tcfg, data, cfg["seed"], report)
        except optuna.TrialPruned as exc:
            link_run(wait=True)
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("epochs", epochs_seen[0])
            run.set_tags({"state": "PRUNED", "reason": str(exc)})
            run.end(FINISHED)
            print(f"{label}trial {trial.number}: {_values_text(values)}  {exc}", flush=True)
            raise
        except BaseException as exc:
            run.set_tags({"state": "FAIL", "reason": f"{type(exc).__name__}: {exc}"})
            run.end(status_for_exception(exc))
            raise
        link_run(wait=True)
        m = fitted.metrics
        for key in ("epochs", "train_acc", "val_acc", "val_loss", "test_acc", "status"):
            trial.set_user_attr(key, m[key])
        value = m.get(objective_key)
        if m["status"] == "diverged" or value is None or not math.isfinite(value):
            reason = m["reason"] or f"{objective_key} is not finite"
            # A recorded reason makes the failure count as a finished trial (the study goes on).
            trial.set_user_attr("failure_reason", f"diverged: {reason}")
            run.set_tags({"state": "FAIL", "reason": f"diverged: {reason}"})
            run.end(FAILED)
            print(f"{label}trial {trial.number}: {_values_text(values)}  diverged ({reason})", flush=True)
            return float("nan")
        run.set_tags({"state": "COMPLETE"})
        run.log_metrics(m["epochs"], {"objective": value})
        log_curves(run, {"trial": fitted.result.history}, None, f"trial-{trial.number}",
                    f"Trial {trial.number}: {_values_text(values)}", cfg, per_run=True)
        run.end(FINISHED)
        print(f"{label}trial {trial.number}: {_values_text(values)}  {objective_key} {value:.4f}  "
              f"epochs {m['epochs']}", flush=True)
        return value

    while time.monotonic() < deadline:
        search.fail_dead_trials(study, storage, on_failed=lambda t: tracker.mark_killed(
            t.user_attrs.get("mlflow_run_id"), f"trial {t.number}: its worker died"))
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        if search.finished_count(study) + running >= n_trials:
            break
        study.optimize(objective, n_trials=1, catch=())


def _worker_entry(cfg: dict, data: Dataset, width: int, parent_id: str | None, worker: int, threads: int) -> None:
    """Entry point of a spawned worker process."""
    import signal

    from dropout_lab.app import _raise_interrupt

    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        phase2_worker(cfg, data, width, parent_id, worker, threads)
    except KeyboardInterrupt:
        sys.exit(130)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_phase2(cfg: dict, data: Dataset, width: int, parent_id: str | None, tracker) -> None:
    """Run the search with ``search.n_workers`` processes on this machine (this one included)."""
    n = cfg["search"]["n_workers"]
    if n == 1:
        phase2_worker(cfg, data, width, parent_id, tracker=tracker)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = [ctx.Process(target=_worker_entry, args=(cfg, data, width, parent_id, i, threads), daemon=False)
             for i in range(1, n)]
    for proc in procs:
        proc.start()
    try:
        phase2_worker(cfg, data, width, parent_id, 0, threads, tracker)
    finally:
        for proc in procs:
            proc.join()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        print(f"warning: {len(bad)} worker process(es) ended with exit codes {bad}; their trials were "
              "recorded as failed and the study continued.", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Final: best rates vs baseline over seeds
# ------------------------------------------------------------------------------------------------

def stats(values: list[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation and a 95% t-interval half-width over seeds."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return {"mean": mean, "std": 0.0, "ci95": None, "n": len(vals)}
    std = statistics.stdev(vals)
    from scipy.stats import t

    half = float(t.ppf(0.975, len(vals) - 1)) * std / math.sqrt(len(vals))
    return {"mean": mean, "std": std, "ci95": half, "n": len(vals)}


def run_final(cfg: dict, data: Dataset, width: int, best_values: dict, tracker, parent,
              output_dir: Path) -> dict:
    """Retrain the no-dropout baseline and the best dropout config over ``final_seeds`` seeds."""
    space = cfg["search"]["space"]
    base_cfg = no_dropout(cfg, width)
    drop_cfg = search.trial_config(cfg, space, best_values, width)
    seeds = [cfg["seed"] + i for i in range(cfg["two_phase"]["final_seeds"])]
    results: dict[str, list[dict]] = {"baseline": [], "dropout": []}
    histories = {}
    for seed in seeds:
        for variant, vcfg in (("baseline", base_cfg), ("dropout", drop_cfg)):
            vcfg = copy.deepcopy(vcfg)
            vcfg["seed"] = seed
            tags = {"phase": "final", "variant": variant, "seed": seed, "owner": search.owner_tag(),
                    "optuna_study": cfg["search"]["study_name"]}
            with tracker.start_run(f"final-{variant}-seed{seed}", params=run_params(vcfg), tags=tags,
                                   parent=parent) as run:
                progress = Progress(f"final {variant} seed {seed}", vcfg["trainer"]["epochs"], cfg["progress"], every_s=5.0)
                fitted = fit(vcfg, data, seed, chain(progress, run.log_metrics))
                m = dict(fitted.metrics, seed=seed)
                run.set_tags({"status": m["status"]})
                run.log_metrics(m["epochs"], {f"final_{k}": m[k] for k in ("test_acc", "test_loss") if m[k] is not None})
                if seed == seeds[0]:
                    histories[variant] = fitted.result.history
                    model_path = output_dir / ("model.npz" if variant == "dropout" else "baseline.npz")
                    fitted.model.save(model_path)
                    run.log_artifact(model_path)
                    if cfg["tracking"]["backend"] == "mlflow" and cfg["tracking"]["log_models"]:
                        run.log_pyfunc_model(model_path, data.mean, data.scale)
            results[variant].append({k: m[k] for k in ("seed", "status", "epochs", "train_acc", "val_acc",
                                                       "test_acc", "test_loss")})
            print(f"final: {variant:<8} seed {seed}  test_acc {fmt(m['test_acc'])}  test_loss {fmt(m['test_loss'])}",
                  flush=True)
    summary = {
        "width": width,
        "best_values": best_values,
        "seeds": seeds,
        "runs": results,
        "baseline": {"test_acc": stats([r["test_acc"] for r in results["baseline"]]),
                     "test_loss": stats([r["test_loss"] for r in results["baseline"]])},
        "dropout": {"test_acc": stats([r["test_acc"] for r in results["dropout"]]),
                    "test_loss": stats([r["test_loss"] for r in results["dropout"]])},
        "output_dir": str(output_dir),
    }
    b, d = summary["baseline"]["test_acc"]["mean"], summary["dropout"]["test_acc"]["mean"]
    summary["improvement_test_acc"] = None if b is None or d is None else d - b
    if histories:
        path = log_curves(parent, {"baseline (no dropout)": histories.get("baseline", []),
                                    "best dropout": histories.get("dropout", [])},
                           output_dir, "learning_curves", f"{_widths_text(width, drop_cfg)} (seed {seeds[0]})",
                           cfg, force=True)
        summary["learning_curves"] = str(path) if path else None
    return summary


# ------------------------------------------------------------------------------------------------
# The whole procedure
# ------------------------------------------------------------------------------------------------

def run_two_phase(cfg: dict, output_dir: Path) -> int:
    """Phase 1, phase 2 and the final comparison; writes summary.json and prints where to look."""
    import optuna

    start = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Stores first: a bad storage or tracking URI is reported before any work is done.
    storage_url = search.storage_url(cfg)
    storage = search.open_storage(storage_url)
    # Create the MLflow store and experiment here, once, before any worker process starts.
    tracker = make_tracker(cfg)
    # The data before the study: a typo in a data path must not leave a study behind that the
    # corrected command would then refuse as "created with another configuration".
    with closing(tracker):
        data = load_dataset(cfg["dataset"], cfg["model"]["dtype"])
        print(data.describe(), flush=True)
        timing = {"data_seconds": round(time.perf_counter() - start, 3)}
        return _two_phase(cfg, output_dir, storage_url, storage, tracker, data, start, timing)


def _two_phase(cfg: dict, output_dir: Path, storage_url: str, storage, tracker, data: Dataset, start: float,
               timing: dict) -> int:
    import optuna

    def stage(name: str, began: float, fit_began: float) -> None:
        # Each stage's wall time and the part of it spent training: the rest is bookkeeping.
        timing[f"{name}_seconds"] = round(time.perf_counter() - began, 3)
        timing[f"{name}_fit_seconds"] = round(fit_seconds() - fit_began, 3)

    # The MLflow writer opens its store while the data loads and phase 1 starts: a store it cannot use
    # stops the job at the next call (phase 1 then reruns, nothing else was recorded).
    study = search.open_study(cfg, storage)
    study_name = study.study_name
    print(f"study '{study_name}' in {search._redact(storage_url)}: {search.finished_count(study)} of "
          f"{cfg['search']['n_trials']} trials finished so far", flush=True)

    def do_phase1() -> dict:
        parent = tracker.start_run(f"two_phase-{study_name}", params=run_params(cfg),
                                   tags={"phase": "parent", "optuna_study": study_name,
                                         "optuna_storage": search._redact(storage_url)})
        parent.log_text(to_yaml(cfg), "config.yaml")
        try:
            record = run_phase1(cfg, data, tracker, parent, output_dir)
        except BaseException as exc:
            parent.end(status_for_exception(exc))
            raise
        record["parent_run_id"] = parent.id
        if cfg["search"]["enqueue_advice"] and not study.get_trials(deepcopy=False):
            advice = search.advice_values(cfg["search"]["space"])
            if advice:
                study.enqueue_trial(advice, user_attrs={"enqueued": "the 2015 post's advice"})
        return record

    began, fit_began = time.perf_counter(), fit_seconds()
    phase1 = search.once_per_study(study, storage, "phase1", do_phase1,
                                   on_wait=lambda: print("phase 1 is running in another process; waiting for it",
                                                         flush=True))
    width = phase1["width"]
    stage("phase1", began, fit_began)
    parent = tracker.reopen(phase1.get("parent_run_id"))
    if parent.key is None and cfg["tracking"]["backend"] == "mlflow":
        # The study's parent run lives in another MLflow store: start one in this one.
        parent = tracker.start_run(f"two_phase-{study_name}", params=run_params(cfg),
                                   tags={"phase": "parent", "optuna_study": study_name})
    tracker.kill_orphans(parent)
    print(f"phase 1: width {width} ({'fits' if phase1['fit'] else 'best-fitting, does NOT fit'} the training "
          f"data); baseline val_acc {fmt(phase1['baseline']['val_acc'])} test_acc "
          f"{fmt(phase1['baseline']['test_acc'])}", flush=True)
    try:
        timeout = cfg["search"]["timeout"]
        search_start = time.monotonic()
        began, fit_began = time.perf_counter(), fit_seconds()
        while True:
            run_phase2(cfg, data, width, parent.id, tracker)
            _wait_for_running(study, storage)
            study = optuna.load_study(study_name=study_name, storage=storage)
            # A trial whose worker died late is failed only while we wait: draw its replacement.
            if search.finished_count(study) >= cfg["search"]["n_trials"]:
                break
            if timeout and time.monotonic() - search_start >= timeout:
                break
        stage("phase2", began, fit_began)
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            reasons = sorted({t.user_attrs.get("failure_reason", t.user_attrs.get("reason", "failed"))
                              for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE})
            parent.set_tags({"status": "all trials failed"})
            parent.end(FAILED)
            print(f"error: no trial of study '{study_name}' completed ({len(study.trials)} trials; "
                  f"reasons: {'; '.join(reasons)[:500]}). Lower trainer.lr or widen the search space.",
                  file=sys.stderr)
            return EXIT_ALL_FAILED
        best = study.best_trial
        best_values = dict(best.params)
        if cfg["tracking"]["log_plots"] or cfg["tracking"]["backend"] == "none":
            # Drawn by the MLflow writer while the final stage trains (tracking=none: drawn now).
            parent.plot("capacity", output_dir / "phase1_capacity.png", rows=phase1["rows"], chosen=width,
                        title=f"Phase 1 on {cfg['dataset']['name']}: accuracy vs width")
            parent.plot("study_figures", output_dir, storage=storage_url, study_name=study_name,
                        objective=cfg["search"]["objective"])
        n_seeds = cfg["two_phase"]["final_seeds"]
        began, fit_began = time.perf_counter(), fit_seconds()
        final = search.once_per_study(
            study, storage, f"final-trial{best.number}-seeds{n_seeds}",
            lambda: run_final(cfg, data, width, best_values, tracker, parent, output_dir),
            on_wait=lambda: print("the final retraining is running in another process; waiting for it", flush=True))
    except BaseException as exc:
        parent.end(status_for_exception(exc))
        raise

    stage("final", began, fit_began)
    timing["fit_seconds"] = round(fit_seconds(), 3)
    timing["tracking_wait_seconds"] = round(tracker.waited_seconds, 3)
    summary = _summary(cfg, study, phase1, best, final, tracker, parent, storage_url, start)
    summary["timing"] = {"wall_seconds": summary["wall_seconds"], **timing}
    write_json(output_dir / "summary.json", summary)
    parent.log_artifact(output_dir / "summary.json")
    tables = _tables_text(summary)
    parent.log_text(tables, "summary.txt")
    parent.log_metrics(0, {"baseline_test_acc": summary["final"]["baseline"]["test_acc"]["mean"] or math.nan,
                           "dropout_test_acc": summary["final"]["dropout"]["test_acc"]["mean"] or math.nan,
                           "best_value": best.value})
    parent.end(FINISHED)
    tracker.close()  # everything recorded (and every figure drawn) before we say where to look
    print()
    print(tables)
    print(f"\nwrote {output_dir / 'summary.json'}  (wall {summary['wall_seconds']:.1f}s)")
    if tracker.ui_command():
        print(f"MLflow runs:   {tracker.ui_command()}")
    print(f"Optuna study:  {search.dashboard_command(storage_url)}")
    return 0


def _wait_for_running(study, storage, poll: float = 1.0) -> None:
    """Wait until no trial of the study is running (other workers finishing theirs)."""
    import optuna

    said = False
    while True:
        search.fail_dead_trials(study, storage)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        if not said:
            print(f"waiting for {len(running)} running trial(s) of other workers", flush=True)
            said = True
        time.sleep(poll)


def _summary(cfg, study, phase1, best, final, tracker, parent, storage_url, start) -> dict:
    from optuna.trial import TrialState

    counts = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.trials:
        if t.state.name.lower() in counts:
            counts[t.state.name.lower()] += 1
    return {
        "task": "two_phase",
        "status": "completed",
        "dataset": cfg["dataset"]["name"],
        "phase1": {"width": phase1["width"], "fit": phase1["fit"],
                   "train_acc": phase1["baseline"]["train_acc"], "train_loss": phase1["baseline"]["train_loss"],
                   "baseline_val_acc": phase1["baseline"]["val_acc"], "baseline_test_acc": phase1["baseline"]["test_acc"],
                   "rows": phase1["rows"]},
        "phase2": {"n_trials": len(study.trials), "states": counts, "objective": cfg["search"]["objective"],
                   "direction": search.direction(cfg), "best_trial": best.number, "best_value": best.value,
                   "best_params": best.params},
        "final": final,
        "improvement_test_acc": final["improvement_test_acc"],
        "mlflow": {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name,
                   "experiment_id": tracker.experiment_id, "parent_run_id": parent.id},
        "optuna": {"storage": search._redact(storage_url), "study_name": study.study_name},
        "wall_seconds": round(time.perf_counter() - start, 2),
        "config": _redacted(cfg),
    }


def _redacted(cfg: dict) -> dict:
    """``cfg`` with passwords in URLs hidden, for files written to disk."""
    import json

    return json.loads(json.dumps(cfg, default=str), object_hook=lambda d: {k: search._redact(v) for k, v in d.items()})


def _tables_text(s: dict) -> str:
    lines = [f"Phase 1 (dropout off): width {s['phase1']['width']}, "
             f"{'fits' if s['phase1']['fit'] else 'DOES NOT FIT'} the training data"]
    lines.append(f"{'width':>7} {'train_acc':>10} {'val_acc':>10} {'test_acc':>10} {'epochs':>7}  fit")
    for r in s["phase1"]["rows"]:
        lines.append(f"{r['width']:>7} {fmt(r['train_acc']):>10} {fmt(r['val_acc']):>10} "
                     f"{fmt(r['test_acc']):>10} {r['epochs']:>7}  {r['fit']}")
    p2 = s["phase2"]
    lines.append("")
    lines.append(f"Phase 2 (Optuna): {p2['n_trials']} trials {p2['states']}; best trial {p2['best_trial']} "
                 f"{p2['objective']} {p2['best_value']:.4f} with {_values_text(p2['best_params'])}")
    f = s["final"]
    lines.append("")
    lines.append(f"Final, {len(f['seeds'])} seeds, test set, dropout off at evaluation:")
    lines.append(f"{'':<10} {'test_acc mean':>14} {'std':>8} {'95% CI':>10} {'test_loss mean':>15}")
    for variant in ("baseline", "dropout"):
        a, l = f[variant]["test_acc"], f[variant]["test_loss"]
        ci = f"±{a['ci95']:.4f}" if a["ci95"] is not None else "-"
        lines.append(f"{variant:<10} {fmt(a['mean']):>14} {fmt(a['std']):>8} {ci:>10} {fmt(l['mean']):>15}")
    imp = s["improvement_test_acc"]
    if imp is not None:
        lines.append(f"dropout - baseline: {imp * 100:+.2f} points of test accuracy")
    return "\n".join(lines)


def _widths_text(width: int, drop_cfg: dict) -> str:
    """The learning-curve title: both widths when the search made the dropout net wider (width_multiplier)."""
    wide = int(round(width * float(drop_cfg["model"].get("width_multiplier", 1.0))))
    if wide == width:
        return f"Baseline vs dropout at width {width}"
    return f"Baseline (width {width}) vs dropout (width {wide})"


def _values_text(values: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
