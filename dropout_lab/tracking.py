"""Recording runs in MLflow (or nowhere, with ``tracking=none``).

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids, so nested runs, several
worker processes and a remote tracking server all work the same way. Per-epoch metrics are buffered
and written with ``log_batch`` (at most every ``flush_seconds``, and when the run ends): never one
database round trip per number. Calls that hit SQLite's ``database is locked`` (several local writers)
are retried, so no write is lost. ``mlflow`` is imported only when tracking is on.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from dropout_lab.errors import ConfigError, TrackingError
from dropout_lab.search import _redact

T = TypeVar("T")

# MLflow run statuses as strings so this module can describe them without importing mlflow.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
CONNECT_TIMEOUT_SECONDS = 5
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def _retry(fn: Callable[[], T], what: str, attempts: int = 40) -> T:
    """Call ``fn``, retrying while a concurrent writer holds the SQLite lock or a DB is being created."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the message is the only portable signal
            text = str(exc).lower()
            transient = any(s in text for s in (
                "database is locked", "already exists", "unique constraint failed", "disk i/o error",
            ))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError(f"unreachable: {what}")


class NullRun:
    """A run that records nothing (``tracking=none``)."""

    id: str | None = None
    key: int | None = None

    def known_id(self) -> str | None:
        return None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_pyfunc_model(self, npz_path: str | Path, mean=None, scale=None) -> None: ...
    def flush(self) -> None: ...
    def end(self, status: str = FINISHED) -> None: ...

    def plot(self, figure: str, path: str | Path, *, keep: bool = True, **kwargs: Any) -> None:
        """Draw the figure now when the file is wanted (nothing is recorded)."""
        if keep:
            draw(figure, path, kwargs)

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(status_for_exception(exc))


class NullTracker:
    """Tracking turned off."""

    uri: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    waited_seconds = 0.0

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None,
                  parent: NullRun | None = None) -> NullRun:
        return NullRun()

    def handle(self, run_id: str | None) -> NullRun:
        return NullRun()

    def reopen(self, run_id: str | None) -> NullRun:
        return NullRun()

    def wait_ready(self) -> None: ...
    def kill_orphans(self, parent: NullRun) -> None: ...
    def mark_killed(self, run_id: str | None, reason: str) -> None: ...
    def close(self) -> None: ...

    def ui_command(self) -> str | None:
        return None


def status_for_exception(exc: BaseException | None) -> str:
    """The MLflow status a run should end with after ``exc`` (None: it finished)."""
    if exc is None:
        return FINISHED
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return KILLED
    return FAILED


class MlflowRun:
    """One MLflow run. Calls return at once: the writer records them in order (see :class:`MlflowTracker`).

    Per-epoch metrics are buffered here and sent as one batch at most every ``flush_seconds``.
    """

    def __init__(self, tracker: "MlflowTracker", key: int) -> None:
        self.tracker, self.key = tracker, key
        self._metrics: list[tuple[str, float, int, int]] = []
        self._last_flush = time.monotonic()
        self._ended = False

    @property
    def id(self) -> str:
        """The MLflow run id (waits for the writer if it has not created the run yet)."""
        return self.tracker._run_id(self.key)

    def known_id(self) -> str | None:
        """The run id if the writer has already reported it, else None (never waits)."""
        return self.tracker._known_id(self.key)

    def log_params(self, params: dict[str, Any]) -> None:
        items = [(str(k)[:250], _param_value(_redact(v))) for k, v in params.items()]
        self.tracker._send(("batch", self.key, [], items, []))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._metrics.append((k, float(v), now, int(step)))
        if len(self._metrics) >= 900 or time.monotonic() - self._last_flush >= self.tracker.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._metrics:
            self.tracker._send(("batch", self.key, self._metrics, [], []))
            self._metrics = []
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [(str(k), _redact(str(v))[:5000]) for k, v in tags.items()]
        if items:
            self.tracker._send(("batch", self.key, [], [], items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.tracker._send(("artifact", self.key, str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.tracker._send(("text", self.key, _redact(text), artifact_file))

    def log_pyfunc_model(self, npz_path: str | Path, mean=None, scale=None) -> None:
        """Log the weights as an MLflow pyfunc model (``mlflow.pyfunc.load_model(uri).predict(X)``).

        With the training set's ``mean`` and ``scale`` the model takes raw features and standardises
        them itself. The weights file must stay in place until the tracker is closed.
        """
        self.tracker._send(("pyfunc", self.key, str(npz_path), mean, scale))

    def plot(self, figure: str, path: str | Path, *, keep: bool = True, **kwargs: Any) -> None:
        """Draw ``dropout_lab.plots.<figure>(path=path, **kwargs)`` and log the file(s) as artifacts.

        Drawn by the writer too, so a PNG per trial costs training nothing. With ``keep`` the file(s)
        exist once the tracker is closed; without, only ``path``'s name is used (a temporary file,
        kept in MLflow alone).
        """
        self.tracker._send(("plot", self.key, figure, str(path), keep, kwargs))

    def end(self, status: str = FINISHED) -> None:
        if self._ended:
            return
        self._ended = True
        self.flush()
        self.tracker._send(("end", self.key, status))

    def __enter__(self) -> "MlflowRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(status_for_exception(exc))


def _param_value(v: Any) -> str:
    text = "null" if v is None else str(v)
    return text[:6000]


class MlflowTracker:
    """Creates runs in one MLflow experiment at ``uri``.

    With ``asynchronous`` (the default) a writer process owns the MLflow client: it imports MLflow,
    opens (or creates) the store and the experiment while this process loads the data (and starts
    training), then writes metrics, tags, artifacts, models and figures in the order they were sent
    while training goes on. Only the URI checks come first; the rare calls whose answer is needed (a
    run id, reopening a run, :meth:`wait_ready`) wait for the writer. A store it cannot open is a
    ConfigError at the next call. If this process is killed the writer
    still writes everything it was sent. With ``asynchronous=False`` the same :class:`_Writer` runs
    in this process and every call waits for the store.
    """

    def __init__(self, uri: str, experiment_name: str, flush_seconds: float = 5.0,
                 asynchronous: bool = True) -> None:
        self.uri, self.experiment_name, self.flush_seconds = uri, experiment_name, flush_seconds
        _check_uri(uri)
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        # A tracking server that stops answering mid-study: retry for about half a minute, not MLflow's
        # default of several minutes per call; no "View run at URL" line for every run that ends.
        for name, value in HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)
        # Progress bars of artifact transfers would drown the run's own lines.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._ids: dict[int, str] = {}
        self._next_key = 0
        self.waited_seconds = 0.0  # time this process spent waiting for the writer
        self._experiment_id: str | None = None
        self._unusable: str | None = None  # why the store cannot be used, once the writer said so
        self._closed = False
        self._pipe = _WriterProcess(uri, experiment_name) if asynchronous else _InProcess(uri, experiment_name)
        for reply in self._pipe.replies():
            self._on_reply(reply)

    # -- talking to the writer ------------------------------------------------------------------

    def _send(self, op: tuple) -> None:
        if self._closed:
            raise RuntimeError(f"MLflow tracker for {_redact(self.uri)} is closed")
        if self._unusable:
            raise ConfigError(self._unusable)  # the writer could not open the store and has stopped
        self._pipe.send(op)
        for reply in self._pipe.replies():
            self._on_reply(reply)

    def _wait(self, done: Callable[[], bool]) -> None:
        began = time.perf_counter()
        try:
            while not done():
                if self._unusable:
                    raise ConfigError(self._unusable)
                self._on_reply(self._pipe.next_reply())
        finally:
            self.waited_seconds += time.perf_counter() - began

    def _on_reply(self, reply: tuple) -> None:
        kind = reply[0]
        if kind == "ready":
            self._experiment_id = reply[1]
        elif kind == "id":
            self._ids[reply[1]] = reply[2]
        elif kind == "error":
            _, config_error, message = reply
            if config_error:
                self._unusable = message
                raise ConfigError(message)
            raise TrackingError(message)

    def wait_ready(self) -> None:
        """Wait until the store and experiment are open; ConfigError if they cannot be."""
        self._wait(lambda: self._experiment_id is not None)

    @property
    def experiment_id(self) -> str:
        self.wait_ready()
        return self._experiment_id  # type: ignore[return-value]

    def _run_id(self, key: int) -> str:
        self._wait(lambda: key in self._ids)
        return self._ids[key]

    def _known_id(self, key: int) -> str | None:
        for reply in self._pipe.replies():
            self._on_reply(reply)
        return self._ids.get(key)

    def _new_key(self) -> int:
        self._next_key += 1
        return self._next_key

    # -- runs -------------------------------------------------------------------------------------

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None,
                  parent: MlflowRun | NullRun | None = None) -> MlflowRun:
        key = self._new_key()
        parent_key = parent.key if isinstance(parent, MlflowRun) else None
        all_tags = {k: _redact(str(v)) for k, v in (tags or {}).items()}
        self._send(("create", key, name, all_tags, parent_key))
        run = MlflowRun(self, key)
        if params:
            run.log_params(params)
        return run

    def handle(self, run_id: str | None) -> MlflowRun | NullRun:
        """A handle on an existing run (to nest children under it), without changing it."""
        if not run_id:
            return NullRun()
        for key, known in self._ids.items():
            if known == run_id:
                return MlflowRun(self, key)
        key = self._new_key()
        self._ids[key] = run_id
        self._send(("adopt", key, run_id))
        return MlflowRun(self, key)

    def reopen(self, run_id: str | None) -> MlflowRun | NullRun:
        """Set an existing run of this store back to RUNNING (resuming a study); NullRun if it is not here."""
        if not run_id:
            return NullRun()
        for key, known in self._ids.items():
            if known == run_id:  # created by this process: still running
                return MlflowRun(self, key)
        key = self._new_key()
        self._send(("reopen", key, run_id))
        self._wait(lambda: key in self._ids)
        return MlflowRun(self, key) if self._ids[key] else NullRun()

    def mark_killed(self, run_id: str | None, reason: str) -> None:
        """End a run whose process died as KILLED, with the reason as a tag."""
        if run_id:
            self._send(("killed", run_id, reason))

    def kill_orphans(self, parent: MlflowRun | NullRun) -> None:
        """End as KILLED the RUNNING child runs of ``parent`` whose process on this machine is gone."""
        if isinstance(parent, MlflowRun):
            self._send(("orphans", parent.key))

    def close(self) -> None:
        """Wait until the writer has recorded everything sent, then stop it (errors raised here)."""
        if self._closed:
            return
        self._closed = True
        began = time.perf_counter()
        try:
            self._pipe.close(self._on_reply)
        finally:
            self.waited_seconds += time.perf_counter() - began

    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {_redact(self.uri)} in a browser (experiment '{self.experiment_name}')"
        return f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000"


# ------------------------------------------------------------------------------------------------
# The writer: the only code that calls MLflow. It runs in its own process (or in this one).
# ------------------------------------------------------------------------------------------------

class _Writer:
    """Carries out tracker operations with an :class:`mlflow.MlflowClient`; answers as reply tuples."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.uri = uri
        self.run_ids: dict[int, str] = {}
        from mlflow import MlflowClient

        try:
            with _creation_lock(uri):
                # The client creates (and migrates) the store when constructed: inside the lock.
                self.client = MlflowClient(tracking_uri=uri)
                self.experiment_id = _retry(lambda: self._get_or_create(experiment_name), "create experiment")
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the user's URI
            raise ConfigError(
                f"cannot use the MLflow tracking store 'tracking.uri={_redact(uri)}': {_first_line(exc)}. "
                "Allowed: a writable sqlite:///FILE.db path, a reachable http(s):// tracking server, "
                "or tracking=none to turn tracking off."
            ) from None

    def _get_or_create(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ConfigError(
                    f"the MLflow experiment 'tracking.experiment_name={name}' was deleted; restore it "
                    "(mlflow experiments restore) or choose another experiment_name."
                )
            return exp.experiment_id
        return self.client.create_experiment(name)

    def do(self, op: tuple) -> tuple | None:
        """Carry out one operation; the reply to send back, if it has one."""
        kind, args = op[0], op[1:]
        return getattr(self, f"_op_{kind}")(*args)

    def _op_create(self, key: int, name: str, tags: dict, parent_key: int | None) -> tuple:
        if parent_key is not None and parent_key in self.run_ids:
            tags = {**tags, "mlflow.parentRunId": self.run_ids[parent_key]}
        info = _retry(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=tags), "create run")
        self.run_ids[key] = info.info.run_id
        return ("id", key, info.info.run_id)

    def _op_adopt(self, key: int, run_id: str) -> None:
        self.run_ids[key] = run_id

    def _op_reopen(self, key: int, run_id: str) -> tuple:
        try:
            run = _retry(lambda: self.client.get_run(run_id), "get run")
        except Exception:  # noqa: BLE001 - not in this store (another tracking URI)
            return ("id", key, "")
        if run.info.experiment_id != self.experiment_id:
            return ("id", key, "")
        if run.info.status != "RUNNING":
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")
        self.run_ids[key] = run_id
        return ("id", key, run_id)

    def _op_batch(self, key: int, metrics: list, params: list, tags: list) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self.run_ids[key]
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics per call
            chunk = [Metric(*m) for m in metrics[i:i + 1000]]
            _retry(lambda: self.client.log_batch(run_id, metrics=chunk), "log metrics")
        for i in range(0, len(params), 100):  # ... and at most 100 params
            chunk = [Param(*p) for p in params[i:i + 100]]
            _retry(lambda: self.client.log_batch(run_id, params=chunk), "log params")
        if tags:
            items = [RunTag(*t) for t in tags]
            _retry(lambda: self.client.log_batch(run_id, tags=items), "set tags")

    def _op_artifact(self, key: int, path: str, artifact_path: str | None) -> None:
        run_id = self.run_ids[key]
        with _without_passwords(Path(path)) as clean:
            _retry(lambda: self.client.log_artifact(run_id, str(clean), artifact_path), "log artifact")

    def _op_text(self, key: int, text: str, artifact_file: str) -> None:
        run_id = self.run_ids[key]
        _retry(lambda: self.client.log_text(run_id, text, artifact_file), "log text")

    def _op_pyfunc(self, key: int, npz_path: str, mean, scale) -> None:
        import io
        import tempfile

        import mlflow.pyfunc
        import numpy as np

        import dropout_lab

        run_id = self.run_ids[key]
        package = Path(dropout_lab.__file__).parent
        # MLflow prints advice on type hints for predict (forcing its own warning filter), which does
        # not apply to a model whose input is a plain array: keep it off the run's output.
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            artifacts = {"weights": npz_path}
            if mean is not None and scale is not None:
                np.savez(Path(tmp) / "preprocess.npz", mean=np.asarray(mean), scale=np.asarray(scale))
                artifacts["preprocess"] = str(Path(tmp) / "preprocess.npz")
            target = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(target),
                python_model=str(package / "pyfunc.py"),
                artifacts=artifacts,
                # The package travels with the model so it loads where dropout_lab is not installed.
                code_paths=[str(package)],
                pip_requirements=[f"numpy=={np.__version__}"],
            )
            _retry(lambda: self.client.log_artifacts(run_id, str(target), "model"), "log model")

    def _op_plot(self, key: int, figure: str, path: str, keep: bool, kwargs: dict) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            written = draw(figure, path if keep else Path(tmp) / Path(path).name, kwargs)
            for file in written:
                self._op_artifact(key, str(file), None)

    def _op_end(self, key: int, status: str) -> None:
        run_id = self.run_ids[key]
        _retry(lambda: self.client.set_terminated(run_id, status), "end run")

    def _op_killed(self, run_id: str, reason: str) -> None:
        try:
            _retry(lambda: self.client.set_tag(run_id, "killed_reason", reason), "tag run")
            _retry(lambda: self.client.set_terminated(run_id, KILLED), "end run")
        except Exception:  # noqa: BLE001 - the run may not exist in this store
            pass

    def _op_orphans(self, parent_key: int) -> None:
        from dropout_lab.search import _owner_dead

        parent_id = self.run_ids[parent_key]
        runs = _retry(lambda: self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        ), "search runs")
        for run in runs:
            owner = run.data.tags.get("owner", "")
            if owner and _owner_dead(owner):
                self._op_killed(run.info.run_id, f"its process {owner} died")

    def _op_sync(self) -> tuple:
        return ("synced",)


def draw(figure: str, path: str | Path, kwargs: dict) -> list[Path]:
    """``dropout_lab.plots.<figure>(path=path, **kwargs)``: the file(s) written."""
    from dropout_lab import plots

    written = getattr(plots, figure)(path=Path(path), **kwargs)
    if written is None:
        return []
    return list(written) if isinstance(written, (list, tuple)) else [written]


def _reply_error(exc: BaseException) -> tuple:
    return ("error", isinstance(exc, ConfigError), str(exc) if isinstance(exc, ConfigError)
            else f"MLflow: {type(exc).__name__}: {_redact(_first_line(exc))}")


class _InProcess:
    """The writer in this process: every operation is carried out when it is sent."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.writer = _Writer(uri, experiment_name)
        self._replies: list[tuple] = [("ready", self.writer.experiment_id)]

    def send(self, op: tuple) -> None:
        reply = self.writer.do(op)  # errors propagate to the caller, as MLflow's own would
        if reply is not None:
            self._replies.append(reply)

    def replies(self) -> Iterator[tuple]:
        while self._replies:
            yield self._replies.pop(0)

    def next_reply(self) -> tuple:
        if not self._replies:
            raise RuntimeError("waiting for a reply that the in-process writer never gives")
        return self._replies.pop(0)

    def close(self, on_reply: Callable[[tuple], None]) -> None:
        for reply in self.replies():
            on_reply(reply)


class _WriterProcess:
    """The writer in a spawned process, fed through a pipe; replies come back through another."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        ops_in, self._ops = ctx.Pipe(duplex=False)
        self._replies, replies_out = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_writer_main, args=(ops_in, replies_out, uri, experiment_name),
                                 name="dropout_lab-mlflow-writer", daemon=False)
        self._proc.start()
        # Only the writer keeps these ends: its death then reads as end-of-file here, and ours there.
        ops_in.close()
        replies_out.close()
        self._open = True
        atexit.register(self._abandon)

    def send(self, op: tuple) -> None:
        try:
            self._ops.send(op)
        except (BrokenPipeError, OSError):
            raise TrackingError(self._gone()) from None

    def replies(self) -> Iterator[tuple]:
        while self._replies.poll(0):
            yield self.next_reply()

    def next_reply(self) -> tuple:
        try:
            return self._replies.recv()
        except (EOFError, OSError):
            raise TrackingError(self._gone()) from None

    def _gone(self) -> str:
        self._proc.join(5)
        return (f"the MLflow writer process ended (exit code {self._proc.exitcode}); what was sent after "
                "its last write is not recorded")

    def close(self, on_reply: Callable[[tuple], None]) -> None:
        """Ask for a last reply (all earlier operations done), then let the writer exit."""
        self._open = False
        try:
            self.send(("sync",))
            while True:
                reply = self.next_reply()
                if reply[0] == "synced":
                    break
                on_reply(reply)
        finally:
            self._ops.close()
            self._proc.join()
            self._replies.close()

    def _abandon(self) -> None:
        """At exit without close() (an error on the way out): the writer finishes what it has, alone."""
        if self._open:
            self._open = False
            self._ops.close()
            self._replies.close()


def _writer_main(ops, replies, uri: str, experiment_name: str) -> None:
    """The writer process: open the store, then carry out operations until the pipe closes."""
    import queue
    import signal
    import threading

    # Ctrl-C and SIGTERM are for the training process: it ends its runs KILLED through this writer,
    # which must still be there to write that; it stops when the training process closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pending: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        # Read as fast as the operations come, so the training process never waits on a full pipe.
        while True:
            try:
                pending.put(ops.recv())
            except (EOFError, OSError):
                pending.put(None)
                return

    threading.Thread(target=read, daemon=True).start()

    def answer(reply: tuple) -> None:
        try:
            replies.send(reply)
        except (BrokenPipeError, OSError):
            pass  # the training process is gone; keep writing what it sent

    try:
        writer = _Writer(uri, experiment_name)
    except BaseException as exc:  # noqa: BLE001 - reported to the training process
        answer(_reply_error(exc))
        return
    answer(("ready", writer.experiment_id))
    failed = False
    while (op := pending.get()) is not None:
        try:
            reply = writer.do(op)
        except Exception as exc:  # noqa: BLE001 - reported once; later operations are still tried
            if not failed:
                answer(_reply_error(exc))
            failed = True
            continue
        if reply is not None:
            answer(reply)
    # Everything sent has been written: each operation is committed to the store, and its files are
    # closed, before the next one starts. Skip the interpreter's teardown of MLflow, SQLAlchemy and
    # the plotting libraries, which took about 0.9 s that the training process spends waiting for
    # this process to end (MlflowTracker.close).
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def _without_passwords(path: Path) -> Iterator[Path]:
    """``path``, or a copy with URL passwords hidden when it is a small text file holding one (the
    resolved config in summary.json carries search.storage as given)."""
    if path.suffix in (".json", ".yaml", ".yml", ".txt") and path.is_file() and path.stat().st_size < 2**20:
        text = path.read_text(errors="replace")
        clean = _redact(text)
        if clean != text:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / path.name
                copy.write_text(clean)
                yield copy
            return
    yield path


@contextlib.contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a local SQLite store across processes.

    Two processes creating the same new database both run MLflow's schema migrations and one of them
    fails half-way; a lock file beside the database lets exactly one create it.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri[len("sqlite:///"):] + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_uri(uri: str) -> None:
    """Refuse URIs that cannot work before MLflow turns them into a traceback."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(
                f"cannot use 'tracking.uri={uri}': the folder {str(folder)!r} does not exist. Allowed: a "
                "sqlite:///FILE.db path in an existing, writable folder, an http(s):// tracking server, or tracking=none."
            )
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ConfigError(
                f"cannot use 'tracking.uri={uri}': {str(path)!r} is not writable. Allowed: a writable "
                "sqlite:///FILE.db path, an http(s):// tracking server, or tracking=none."
            )
        return
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in ("http", "https", "postgresql", "mysql", "mssql", "databricks", "sqlite", "file"):
        raise ConfigError(
            f"unsupported 'tracking.uri={_redact(uri)}'. Allowed: sqlite:///FILE.db (the default), "
            "http(s)://HOST:PORT (an MLflow tracking server), postgresql://..., or tracking=none."
        )
    port = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}.get(scheme)
    if port is not None:
        _check_reachable(uri, port)


def _check_reachable(uri: str, default_port: int) -> None:
    """Refuse a server that does not accept connections, in seconds (MLflow's own HTTP retries take minutes)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"cannot use 'tracking.uri={_redact(uri)}': {exc}. Allowed: http://HOST:PORT.") from None
    if not host:
        raise ConfigError(f"cannot use 'tracking.uri={_redact(uri)}': it names no host. Allowed: http://HOST:PORT.")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the MLflow tracking store 'tracking.uri={_redact(uri)}': connecting to {host} port {port} "
            f"failed ({exc.strerror or exc}). Start the server (mlflow server --backend-store-uri ... --host 0.0.0.0 "
            "--port PORT) or correct the URI (with +cluster=postgres: DROPOUT_LAB_TRACKING_URI); tracking=none turns "
            "tracking off."
        ) from None


@contextlib.contextmanager
def closing(tracker: MlflowTracker | NullTracker) -> Iterator[MlflowTracker | NullTracker]:
    """Close ``tracker`` at the end: everything sent is then recorded. On an error the error wins (a
    failure to record is not allowed to hide it)."""
    try:
        yield tracker
    except BaseException:
        with contextlib.suppress(Exception):
            tracker.close()
        raise
    tracker.close()


def make_tracker(cfg: dict) -> MlflowTracker | NullTracker:
    """The tracker the ``tracking`` config asks for."""
    t = cfg["tracking"]
    if t["backend"] == "none":
        return NullTracker()
    return MlflowTracker(t["uri"], t["experiment_name"], t["flush_seconds"], t["asynchronous"])
