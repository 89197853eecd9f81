"""Trials per minute of one study with 1, 2 and 3 worker commands joining it (`+cluster=postgres`).

    python experiments/scale_out/bench_workers.py [--workers 1 2 3] [--repeats 3] [--trials 12] [--threads 1]

Starts a throwaway PostgreSQL server and an MLflow tracking server on 127.0.0.1 (tests/pg_server.py;
PostgreSQL's server binaries and a driver, psycopg2-binary, must be installed), then, for each worker
count and repeat, a fresh database and that many `python -m dropout_lab task=two_phase ...
+cluster=postgres` commands started together, as on that many machines. Phase-2 throughput is the
number of finished trials over the time from the first trial's start to the last trial's end (from
the Optuna study, so start-up, phase 1 and the final retraining are left out); `wall` is the whole
command, start to exit of the last worker. All workers run on this machine, each with one BLAS thread
(`--threads`), so a worker's trials cost the same whatever the number of workers. Prints one JSON
line per run, then the medians as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import pg_server  # noqa: E402

# The two-phase job on MNIST-1D, two hidden layers of 128, 40 epochs per trial, no pruning, searching the
# drop rates only (conf/search/default.yaml), so that every trial costs the same.
STUDY = ["task=two_phase", "experiment_name=two_phase", "dataset=mnist1d", "model.hidden=[128,128]",
         "two_phase.widths=[128]", "two_phase.phase1_epochs=3", "two_phase.final_seeds=1", "trainer.epochs=40",
         "search.pruner=none", "progress=false", "tracking.log_plots=false", "+cluster=postgres"]


def one_run(servers, n_workers: int, n_trials: int, tag: str, blas_threads: int) -> dict:
    import optuna

    from dropout_lab import search

    db = servers.createdb(tag)
    # One BLAS thread per worker, whatever their number: the same work per trial in every run, and no
    # workers (or other programs) on this machine's cores waiting for each other's BLAS threads.
    threads = str(blas_threads)
    env = dict(os.environ, DROPOUT_LAB_OPTUNA_STORAGE=db, DROPOUT_LAB_TRACKING_URI=servers.tracking_uri,
               OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        procs = []
        for i in range(n_workers):
            cwd = Path(tmp) / f"worker{i}"
            cwd.mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dropout_lab", *STUDY, f"search.n_trials={n_trials}",
                 f"tracking.experiment_name={tag}"],
                cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        try:
            errors = [p.communicate()[1] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        wall = time.monotonic() - start
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[e[-2000:] for e in errors]}")
    study = optuna.load_study(study_name="two_phase", storage=search.open_storage(db))
    trials = [t for t in study.trials if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    owners = {t.user_attrs.get("owner") for t in trials}
    return {"workers": n_workers, "blas_threads": int(threads), "trials": len(trials), "phase2_seconds": round(span, 2),
            "trials_per_minute": round(60 * len(trials) / span, 1), "wall_seconds": round(wall, 1),
            "workers_that_ran_trials": len(owners)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads of each worker")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers and workers on `kill` too
    rows: dict[int, list[dict]] = {n: [] for n in args.workers}
    load = os.getloadavg()[0]
    with pg_server.servers() as servers:
        for r in range(args.repeats):
            for n in args.workers:  # interleaved, so that every count sees the same machine load
                row = one_run(servers, n, args.trials, f"bench_w{n}_r{r}", args.threads)
                rows[n].append(row)
                print(json.dumps(row), flush=True)
    base = statistics.median(x["trials_per_minute"] for x in rows[args.workers[0]])
    print(f"\nmedian of {args.repeats} runs, {args.trials} trials each, {os.cpu_count()} CPU cores, "
          f"load average {load:.1f} before and {os.getloadavg()[0]:.1f} after")
    print(f"{'workers':>7} {'trials/min':>10} {'speed-up':>8} {'wall s':>7}")
    for n, runs in rows.items():
        tpm = statistics.median(x["trials_per_minute"] for x in runs)
        wall = statistics.median(x["wall_seconds"] for x in runs)
        print(f"{n:>7} {tpm:>10.1f} {tpm / base:>7.2f}x {wall:>7.1f}")


if __name__ == "__main__":
    main()
