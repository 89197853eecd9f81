"""Recording runs in MLflow (or nowhere, with ``tracking=none``).

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids, so nested runs, several
worker processes and a remote tracking server all work the same way. Per-epoch metrics are buffered
and written with ``log_batch`` (at most every ``flush_seconds``, and when the run ends): never one
database round trip per number. Calls that hit SQLite's ``database is locked`` (several local writers)
are retried, so no write is lost. ``mlflow`` is imported only when tracking is on.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from dropout_lab.errors import ConfigError
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

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_pyfunc_model(self, npz_path: str | Path, mean=None, scale=None) -> None: ...
    def flush(self) -> None: ...
    def end(self, status: str = FINISHED) -> None: ...

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(status_for_exception(exc))


class NullTracker:
    """Tracking turned off."""

    uri: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None,
                  parent: NullRun | None = None) -> NullRun:
        return NullRun()

    def handle(self, run_id: str | None) -> NullRun:
        return NullRun()

    def reopen(self, run_id: str | None) -> NullRun:
        return NullRun()

    def kill_orphans(self, parent_id: str | None) -> list[str]:
        return []

    def mark_killed(self, run_id: str | None, reason: str) -> None: ...

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
    """One MLflow run, written through the client with buffered metrics."""

    def __init__(self, tracker: "MlflowTracker", run_id: str) -> None:
        self.tracker, self.id = tracker, run_id
        self.client = tracker.client
        self._metrics: list = []
        self._last_flush = time.monotonic()
        self._ended = False

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], _param_value(_redact(v))) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
            chunk = items[i:i + 100]
            _retry(lambda: self.client.log_batch(self.id, params=chunk), "log params")

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._metrics.append(Metric(k, float(v), now, int(step)))
        if len(self._metrics) >= 900 or time.monotonic() - self._last_flush >= self.tracker.flush_seconds:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            chunk, self._metrics = self._metrics[:1000], self._metrics[1000:]
            _retry(lambda: self.client.log_batch(self.id, metrics=chunk), "log metrics")
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), _redact(str(v))[:5000]) for k, v in tags.items()]
        if items:
            _retry(lambda: self.client.log_batch(self.id, tags=items), "set tags")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with _without_passwords(Path(path)) as clean:
            _retry(lambda: self.client.log_artifact(self.id, str(clean), artifact_path), "log artifact")

    def log_text(self, text: str, artifact_file: str) -> None:
        text = _redact(text)
        _retry(lambda: self.client.log_text(self.id, text, artifact_file), "log text")

    def log_pyfunc_model(self, npz_path: str | Path, mean=None, scale=None) -> None:
        """Log the weights as an MLflow pyfunc model (``mlflow.pyfunc.load_model(uri).predict(X)``).

        With the training set's ``mean`` and ``scale`` the model takes raw features and standardises
        them itself.
        """
        import contextlib
        import io
        import tempfile

        import mlflow.pyfunc
        import numpy as np

        import dropout_lab

        package = Path(dropout_lab.__file__).parent
        # MLflow prints advice on type hints for predict (forcing its own warning filter), which does
        # not apply to a model whose input is a plain array: keep it off the run's output.
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            artifacts = {"weights": str(npz_path)}
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
            _retry(lambda: self.client.log_artifacts(self.id, str(target), "model"), "log model")

    def end(self, status: str = FINISHED) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self.flush()
        finally:
            _retry(lambda: self.client.set_terminated(self.id, status), "end run")

    def __enter__(self) -> "MlflowRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(status_for_exception(exc))


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


def _param_value(v: Any) -> str:
    text = "null" if v is None else str(v)
    return text[:6000]


class MlflowTracker:
    """Creates runs in one MLflow experiment at ``uri``."""

    def __init__(self, uri: str, experiment_name: str, flush_seconds: float = 5.0) -> None:
        self.uri, self.experiment_name, self.flush_seconds = uri, experiment_name, flush_seconds
        _check_uri(uri)
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        # A tracking server that stops answering mid-study: retry for about half a minute, not MLflow's
        # default of several minutes per call; no "View run at URL" line for every run that ends.
        for name, value in HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)
        # Progress bars of artifact transfers would drown the run's own lines.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None,
                  parent: MlflowRun | NullRun | None = None) -> MlflowRun:
        all_tags = {k: _redact(str(v)) for k, v in (tags or {}).items()}
        if parent is not None and parent.id is not None:
            all_tags["mlflow.parentRunId"] = parent.id
        info = _retry(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags), "create run")
        run = MlflowRun(self, info.info.run_id)
        if params:
            run.log_params(params)
        return run

    def handle(self, run_id: str | None) -> MlflowRun | NullRun:
        """A handle on an existing run (to nest children under it), without changing it."""
        return MlflowRun(self, run_id) if run_id else NullRun()

    def reopen(self, run_id: str | None) -> MlflowRun | NullRun:
        """Set an existing run of this store back to RUNNING (resuming a study); NullRun if it is not here."""
        if not run_id:
            return NullRun()
        try:
            run = _retry(lambda: self.client.get_run(run_id), "get run")
        except Exception:  # noqa: BLE001 - not in this store (another tracking URI)
            return NullRun()
        if run.info.experiment_id != self.experiment_id:
            return NullRun()
        if run.info.status != "RUNNING":
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")
        return MlflowRun(self, run_id)

    def mark_killed(self, run_id: str | None, reason: str) -> None:
        """End a run whose process died as KILLED, with the reason as a tag."""
        if not run_id:
            return
        try:
            _retry(lambda: self.client.set_tag(run_id, "killed_reason", reason), "tag run")
            _retry(lambda: self.client.set_terminated(run_id, KILLED), "end run")
        except Exception:  # noqa: BLE001 - the run may not exist in this store
            pass

    def kill_orphans(self, parent_id: str | None) -> list[str]:
        """End as KILLED the RUNNING child runs of ``parent_id`` whose process on this machine is gone."""
        if not parent_id:
            return []
        from dropout_lab.search import _owner_dead

        runs = _retry(lambda: self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        ), "search runs")
        killed = []
        for run in runs:
            owner = run.data.tags.get("owner", "")
            if owner and _owner_dead(owner):
                self.mark_killed(run.info.run_id, f"its process {owner} died")
                killed.append(run.info.run_id)
        return killed

    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {_redact(self.uri)} in a browser (experiment '{self.experiment_name}')"
        return f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000"


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


def make_tracker(cfg: dict) -> MlflowTracker | NullTracker:
    """The tracker the ``tracking`` config asks for."""
    t = cfg["tracking"]
    if t["backend"] == "none":
        return NullTracker()
    return MlflowTracker(t["uri"], t["experiment_name"], t["flush_seconds"])
