"""Phase 2 of the two-phase procedure: an Optuna study over the drop rates (and whatever else the
``search.space`` config names), driven from our code (not Hydra's sweeper) so it can prune and resume.

Storage: by default a journal file (``optuna.journal`` in the working directory), which Optuna
makes safe for several processes on one machine; any RDB URL (``postgresql://...``) for several
machines, with heartbeats so a dead worker's trial is failed and its work redone. The study is
loaded if it exists, so rerunning a command continues it.
"""

from __future__ import annotations

import copy
import math
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from dropout_lab.config import flatten
from dropout_lab.errors import ConfigError

# Keys of the resolved config that define what a study's trials mean: if they change, old trials
# are not comparable with new ones and the study must have another name.
STUDY_KEYS = ("dataset", "model", "trainer", "two_phase.widths", "two_phase.start_width", "two_phase.growth",
              "two_phase.max_width", "two_phase.fit_metric", "two_phase.fit_threshold", "two_phase.phase1_epochs",
              "search.space", "search.objective", "seed")
DEFAULT_STORAGE = "optuna.journal"
HEARTBEAT_SECONDS = 10
STALE_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10


def storage_url(cfg: dict) -> str:
    """The study storage the config asks for (``search.storage``, default: the local journal file)."""
    return cfg["search"]["storage"] or DEFAULT_STORAGE


def open_storage(url: str):
    """An Optuna storage for ``url``: RDB URLs get heartbeats; anything else is a journal file path."""
    import optuna
    from optuna.storages import RDBStorage

    if "://" in url:
        scheme, _, driver = url.split("://", 1)[0].partition("+")
        if scheme not in ("sqlite", "postgresql", "mysql"):
            raise ConfigError(
                f"unsupported 'search.storage={_redact(url)}': scheme {scheme!r} is not known. Allowed: null (the "
                "journal file optuna.journal in the working directory), a journal file path, sqlite:///FILE.db (one "
                "process at a time), postgresql://USER@HOST/DB or mysql://... for several machines."
            )
        engine_kwargs = None
        if scheme != "sqlite":
            engine_kwargs = {"pool_pre_ping": True}
            if scheme == "postgresql" and driver in ("", "psycopg2", "psycopg"):
                # An unreachable host fails in seconds, not after the system's TCP timeout.
                engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        rdb_url = _with_driver(url)
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        rdb_url,
                        heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=3 * HEARTBEAT_SECONDS,
                        heartbeat_stale_trial_callback=_trial_found_dead,
                        engine_kwargs=engine_kwargs,
                    )
            except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable server
                text = str(exc).lower()
                if attempt < 4 and any(s in text for s in ("already exists", "duplicate key", "unique constraint")):
                    time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables right now
                    continue
                raise ConfigError(
                    f"cannot open the Optuna storage 'search.storage={_redact(url)}': {_first_line(exc)}. Allowed: a "
                    "reachable RDB URL (postgresql://USER@HOST:PORT/DB, password in PGPASSWORD or ~/.pgpass), a "
                    "journal file path, or null for the local default."
                ) from None
    path = Path(url)
    if path.is_dir():
        raise ConfigError(f"'search.storage={url}' is a folder; allowed: a journal file path such as optuna.journal.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(
            f"cannot write the Optuna journal 'search.storage={url}': the folder {str(folder)!r} does not exist or "
            "is not writable. Allowed: a journal file in a writable folder, or an RDB URL."
        )
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _with_driver(url: str) -> str:
    """``url`` naming the PostgreSQL driver that is installed when it names none.

    SQLAlchemy 2.1 reads a plain ``postgresql://`` as psycopg (3), older versions as psycopg2 (the
    ``postgres`` extra of this package); either works here.
    """
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{module}://" + url[len("postgresql://"):]
    raise ConfigError(
        f"cannot open the Optuna storage 'search.storage={_redact(url)}': no PostgreSQL driver for Python is "
        "installed. Allowed: install one (pip install 'dropout_lab[postgres]', i.e. psycopg2-binary) on every "
        "worker machine, or use another storage."
    )


def dashboard_command(url: str) -> str:
    """The optuna-dashboard command that opens ``url``, bound to loopback."""
    return f"optuna-dashboard {_redact(url)} --host 127.0.0.1 --port 8080"


def _redact(value: Any) -> Any:
    """``value`` with the password of every URL in it hidden (``postgresql://user:***@host/db``)."""
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return value
    return _URL_PASSWORD.sub(r"\1***\2", value)


_URL_PASSWORD = re.compile(r"(\w://[^\s/:@]*:)[^\s/]*(@)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def study_signature(cfg: dict) -> dict[str, str]:
    """The flattened config entries that define a study's trials (see :data:`STUDY_KEYS`)."""
    flat = flatten(cfg)
    return {k: repr(v) for k, v in sorted(flat.items()) if any(k == s or k.startswith(s + ".") for s in STUDY_KEYS)}


def make_sampler(cfg: dict, seed_offset: int = 0):
    """The configured sampler, seeded from ``seed`` (plus ``seed_offset`` for extra workers)."""
    import optuna

    s = cfg["search"]
    seed = (int(cfg["seed"]) + seed_offset) % 2**32
    name = s["sampler"]
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s["n_startup_trials"])
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s["n_startup_trials"])
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s["n_startup_trials"])
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    # grid: every entry needs a finite set of values (choices, or low..high with step).
    grid = {}
    for pname, spec in s["space"].items():
        if spec.get("type") == "categorical":
            grid[pname] = list(spec["choices"])
        elif spec.get("step"):
            n = int(round((spec["high"] - spec["low"]) / spec["step"])) + 1
            grid[pname] = [round(spec["low"] + i * spec["step"], 10) for i in range(n)]
        else:
            raise ConfigError(
                f"search.sampler=grid needs a finite grid, but 'search.space.{pname}' has no step or choices; "
                f"allowed: add search.space.{pname}.step=0.1 (for example) or give choices."
            )
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(cfg: dict):
    import optuna

    name = cfg["search"]["pruner"]
    if name == "median":
        # Dropout nets start slowly: no trial is judged in its first quarter of epochs.
        warmup = max(3, int(cfg["trainer"]["epochs"]) // 4)
        return optuna.pruners.MedianPruner(n_startup_trials=cfg["search"]["n_startup_trials"], n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=int(cfg["trainer"]["epochs"]))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2)
    return optuna.pruners.NopPruner()


def direction(cfg: dict) -> str:
    return "maximize" if cfg["search"]["objective"].endswith("acc") else "minimize"


def open_study(cfg: dict, storage):
    """Create the study, or load it if it exists and was made by the same configuration."""
    import optuna

    name = cfg["search"]["study_name"]
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction(cfg),
            sampler=make_sampler(cfg), pruner=make_pruner(cfg), load_if_exists=True,
        )
    except ValueError as exc:  # direction mismatch with the stored study
        raise ConfigError(
            f"the Optuna study 'search.study_name={name}' exists with another objective direction ({exc}); "
            "allowed: the objective it was created with, or a new study_name."
        ) from None
    if getattr(storage, "heartbeat_interval", None) is not None:  # an RDB storage: the configured heartbeat
        storage.heartbeat_interval = int(cfg["search"]["heartbeat_seconds"])
        storage.grace_period = 3 * storage.heartbeat_interval
    signature = study_signature(cfg)
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
        # optuna-dashboard then labels the objective axis with its name.
        study.set_metric_names([cfg["search"]["objective"]])
    elif stored != signature:
        changed = sorted(k for k in set(stored) | set(signature) if stored.get(k) != signature.get(k))
        shown = ", ".join(f"{k} (study: {stored.get(k, 'unset')}, now: {signature.get(k, 'unset')})" for k in changed[:4])
        raise ConfigError(
            f"the Optuna study 'search.study_name={name}' was created with another configuration, so its trials "
            f"cannot be continued: {shown}{' ...' if len(changed) > 4 else ''}. Allowed: the study's original "
            "settings, or a new search.study_name to start a fresh study."
        )
    return study


# ------------------------------------------------------------------------------------------------
# Coordination through the study storage: results other processes can reuse, and leases so that
# work done once per study (phase 1, the final retraining) is done by one process only.
# ------------------------------------------------------------------------------------------------

def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str) -> bool:
    """True when ``owner`` ("host:pid") is a process on this machine that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    """Exclusive right to do one piece of work for a study, held as a small marker study.

    Creating a study name is atomic in every Optuna storage, so exactly one process wins. The holder
    refreshes a heartbeat; a lease whose holder died on this machine, or whose heartbeat is older than
    :data:`STALE_SECONDS`, is broken by the next process that asks.
    """

    def __init__(self, storage, name: str) -> None:
        self.storage, self.name = storage, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def try_acquire(cls, storage, study_name: str, what: str) -> "Lease | None":
        import optuna
        from optuna.exceptions import DuplicatedStudyError

        name = f"{study_name}:{what}-lease"
        for _ in range(2):
            try:
                marker = optuna.create_study(storage=storage, study_name=name)
            except DuplicatedStudyError:
                try:
                    marker = optuna.load_study(study_name=name, storage=storage)
                except KeyError:
                    continue  # released meanwhile: try again
                owner = marker.user_attrs.get("owner", "")
                beat = marker.user_attrs.get("heartbeat", 0.0)
                if _owner_dead(owner) or (owner and time.time() - beat > STALE_SECONDS):
                    _delete_study(storage, name)
                    continue
                return None
            # The heartbeat before the owner: a marker with an owner and no heartbeat yet would look stale.
            marker.set_user_attr("heartbeat", time.time())
            marker.set_user_attr("owner", _owner())
            lease = cls(storage, name)
            lease._thread = threading.Thread(target=lease._beat, args=(marker,), daemon=True)
            lease._thread.start()
            return lease
        return None

    def _beat(self, marker) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                marker.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - a missed beat only risks the lease going stale
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _delete_study(self.storage, self.name)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _delete_study(storage, name: str) -> None:
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass


def once_per_study(study, storage, what: str, work: Callable[[], dict], *, poll: float = 1.0,
                   on_wait: Callable[[], None] | None = None) -> dict:
    """Return the study's stored result ``what``, computing it here if no other process is.

    The result (a JSON-able dict) is stored as the study user attribute ``what``. While another
    process holds the lease, wait for its result; if it dies, take over.
    """
    import optuna

    said = False
    while True:
        fresh = optuna.load_study(study_name=study.study_name, storage=storage)
        if what in fresh.user_attrs:
            return fresh.user_attrs[what]
        lease = Lease.try_acquire(storage, study.study_name, what)
        if lease is not None:
            with lease:
                fresh = optuna.load_study(study_name=study.study_name, storage=storage)
                if what in fresh.user_attrs:  # finished by another process just before we got the lease
                    return fresh.user_attrs[what]
                result = work()
                study.set_user_attr(what, result)
                return result
        if not said and on_wait is not None:
            on_wait()
            said = True
        time.sleep(poll)


# ------------------------------------------------------------------------------------------------
# Trials
# ------------------------------------------------------------------------------------------------

def set_key(cfg: dict, key: str, value: Any) -> None:
    """Set a dotted ``key`` ("model.drop_input") in a nested config dict."""
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def suggest(trial, space: dict) -> dict[str, Any]:
    """Draw the trial's values for every ``search.space`` entry."""
    values = {}
    for name, spec in space.items():
        kind = spec.get("type", "float")
        if kind == "categorical":
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif kind == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                             step=int(spec.get("step") or 1), log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               step=spec.get("step"), log=bool(spec.get("log")))
    return values


def trial_config(cfg: dict, space: dict, values: dict[str, Any], width: int) -> dict:
    """The config of one trial: phase 1's width at every hidden layer, then the trial's values."""
    tcfg = copy.deepcopy(cfg)
    tcfg["model"]["hidden"] = [int(width)] * len(cfg["model"]["hidden"])
    for name, value in values.items():
        set_key(tcfg, space[name]["key"], value)
    return tcfg


def advice_values(space: dict) -> dict[str, Any] | None:
    """The 2015 post's advice (input 0.2, hidden 0.5) as values of the space, when it lies inside it."""
    advice = {"model.drop_input": 0.2, "model.drop_hidden": 0.5}
    values = {}
    for name, spec in space.items():
        if spec["key"] not in advice:
            continue
        v = advice[spec["key"]]
        if spec.get("type", "float") != "float" or not spec["low"] <= v <= spec["high"]:
            return None
        values[name] = v
    return values or None


def finished_count(study) -> int:
    """Trials that count towards ``search.n_trials``: complete, pruned, or failed for a recorded reason
    (diverged). Trials failed because their worker died do not count: their work is redone."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and "failure_reason" in t.user_attrs:
            n += 1
    return n


# What this process does with a trial found dead (its worker's process gone, or its heartbeat stale):
# the last ``on_failed`` given to fail_dead_trials (the tracker ending the trial's MLflow run). Optuna
# itself fails stale trials at the start of every trial; the storage calls _trial_found_dead then.
_on_failed: Callable[[Any], None] | None = None


def _trial_found_dead(study, trial) -> None:
    if _on_failed is not None:
        try:
            _on_failed(trial)
        except Exception:  # noqa: BLE001 - never break a worker's trial loop over another worker's run
            pass


def fail_dead_trials(study, storage, on_failed: Callable[[Any], None] | None = None) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL; returns their numbers.

    On this machine a worker is gone when its process no longer exists; RDB storages also fail trials
    whose heartbeat stopped (Optuna's own mechanism, run here as well), wherever their worker ran.
    ``on_failed(trial)`` is called for each; it is remembered for later calls in this process, and for
    the trials Optuna fails as stale by itself.
    """
    global _on_failed
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    if on_failed is not None:
        _on_failed = on_failed
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner", "")
        if owner and _owner_dead(owner):
            try:
                # The reason first: a finished trial can no longer be changed.
                storage.set_trial_user_attr(t._trial_id, "killed_reason", f"worker {owner} died while running it")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already finished by someone else
                continue
            failed.append(t.number)
            _trial_found_dead(study, t)
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)  # calls _trial_found_dead for each trial it fails
        failed += [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if t.number not in before]
    return failed


def owner_tag() -> str:
    return _owner()


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
