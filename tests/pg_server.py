"""Throwaway servers for the scale-out test and benchmark: PostgreSQL on 127.0.0.1 in a temporary data
folder (trust authentication on loopback) and an MLflow tracking server backed by it.

``servers()`` is a context manager yielding a :class:`Servers` with the two URLs; leaving it always
stops both servers and removes their folders. :class:`Unavailable` (with the reason) is raised when
this machine cannot run them (no PostgreSQL binaries, no psycopg2 driver, no ``postgres`` user to run
``initdb`` as when running as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class Unavailable(RuntimeError):
    """PostgreSQL (or the driver) is not available here; the message says what is missing."""


@dataclass
class Servers:
    pg_bin: Path            # the folder of PostgreSQL's programs (createdb, ...)
    pg_port: int
    optuna_url: str = ""    # the database ``optuna``, for an Optuna storage
    tracking_uri: str = ""  # http://127.0.0.1:PORT, the MLflow tracking server

    def createdb(self, name: str) -> str:
        """Create database ``name``; returns its URL (``postgresql://postgres@127.0.0.1:PORT/NAME``)."""
        _run([str(self.pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", name])
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{name}"


def pg_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], user: str | None = None, timeout: float = 120) -> str:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def driver_scheme() -> str:
    """``postgresql+psycopg2`` or ``postgresql+psycopg``: SQLAlchemy's URL scheme for the installed driver."""
    import importlib.util

    for module, scheme in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        if importlib.util.find_spec(module) is not None:
            return scheme
    raise Unavailable("no PostgreSQL driver for Python is installed: pip install -e '.[postgres]'")


def check_available() -> Path:
    """The PostgreSQL bin folder, or :class:`Unavailable` saying what is missing."""
    bin_dir = pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                          "apt-get install postgresql")
    driver_scheme()
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run initdb as") from None
        if not shutil.which("runuser"):
            raise Unavailable("running as root and there is no runuser to run initdb as 'postgres'")
    return bin_dir


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[tuple[Path, int]]:
    """A PostgreSQL server on 127.0.0.1 with its data in ``root/pgdata``; yields (bin folder, port)."""
    bin_dir = check_available()
    user = "postgres" if os.geteuid() == 0 else None
    data = root / "pgdata"
    data.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(data, user)
    port = free_port()
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-sync"], user=user)
    except RuntimeError as exc:
        raise Unavailable(f"initdb failed: {exc}") from None
    options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c full_page_writes=off -c max_connections=200"
    try:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", options,
              "-w", "-t", "60", "start"], user=user)
    except RuntimeError as exc:
        log = root / "postgres.log"
        raise Unavailable(f"PostgreSQL did not start: {exc} {log.read_text()[-1000:] if log.exists() else ''}") from None
    try:
        yield bin_dir, port
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user=user, timeout=60)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, root: Path, timeout: float = 90) -> Iterator[str]:
    """An MLflow tracking server on 127.0.0.1 (one worker, artifacts served from ``root/artifacts``)."""
    port = free_port()
    log = (root / "mlflow-server.log").open("w")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the MLflow server exited ({proc.returncode}): "
                                   f"{(root / 'mlflow-server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not answer within {timeout:.0f} s: "
                                   f"{(root / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """PostgreSQL with databases ``optuna`` and ``mlflow``, and an MLflow server on the latter."""
    root = Path(tempfile.mkdtemp(prefix="dropout-lab-servers-"))
    try:
        with postgres(root) as (bin_dir, port):
            s = Servers(bin_dir, port)
            s.optuna_url = s.createdb("optuna")
            mlflow_db = s.createdb("mlflow").replace("postgresql://", driver_scheme() + "://", 1)
            with mlflow_server(mlflow_db, root) as uri:
                s.tracking_uri = uri
                yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # start the servers by hand: python tests/pg_server.py (Ctrl-C stops them)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop them on `kill` too
    with servers() as s:
        print(f"DROPOUT_LAB_OPTUNA_STORAGE={s.optuna_url}\nDROPOUT_LAB_TRACKING_URI={s.tracking_uri}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
