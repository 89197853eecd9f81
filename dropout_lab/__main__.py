"""``python -m dropout_lab [overrides]``: a thin Hydra entry point around :func:`dropout_lab.app.run`."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def config_dir() -> str:
    """The folder holding ``config.yaml``.

    From a source checkout or an editable install it is ``conf/`` at the repository root; a built
    wheel ships the same files as ``dropout_lab/conf``. An absolute path keeps Hydra independent of
    the working directory and of how the entry point was called.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("dropout_lab: cannot find its config folder (conf/config.yaml); reinstall the package.")


def _task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from dropout_lab.app import run

    from hydra.types import RunMode

    from dropout_lab.app import EXIT_FAILED

    hydra_cfg = HydraConfig.get()
    code = run(cfg, Path(hydra_cfg.runtime.output_dir))
    # In a multirun sweep a run that failed (e.g. diverged, recorded as such) must not end the
    # sweep; bad input still does, since every job of the sweep would repeat it.
    if code == EXIT_FAILED and hydra_cfg.mode == RunMode.MULTIRUN:
        return
    if code:
        sys.exit(code)


def _one_paragraph(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line error text as one paragraph (no search path, no schema names)."""
    from omegaconf.errors import OmegaConfBaseException

    texts = [str(exc)]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause) not in texts[0]:
        texts.append(str(cause))
    parts: list[str] = []
    options: list[str] | None = None
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("reference_type=", "object_type=", "See https://hydra.cc")):
                continue
            if line.startswith("Config search path:"):
                break
            if options is not None and raw.startswith((" ", "\t")):
                options.append(line)
                continue
            if options is not None:
                parts[-1] += " " + ", ".join(options) + "."
                options = None
            if line.startswith("Available options in"):
                options = []
                parts.append(line)
                continue
            parts.append(line if line.endswith((".", ":", ";")) else line + ".")
    if options is not None:
        parts[-1] += " " + ", ".join(options) + "."
    override = getattr(exc, "override", None)
    if isinstance(override, str):
        parts.insert(0, f"cannot parse the override {override!r}:")
    return " ".join(parts)


def _compact_config_errors() -> None:
    """Report a bad override or an unresolvable config as one paragraph on stderr (exit 2), no traceback.

    Hydra prints composition errors over several paragraphs (with its search path) and lets OmegaConf
    interpolation errors escape as tracebacks; its reporting hook is wrapped here. With
    ``HYDRA_FULL_ERROR=1`` Hydra's own full report is kept.
    """
    try:
        import hydra._internal.utils as hydra_utils
        from hydra.errors import CompactHydraException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # a Hydra without this hook: its own reporting stays
        return
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None or getattr(original, "_dropout_lab_compact", False):
        return

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except (CompactHydraException, OmegaConfBaseException) as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                from dropout_lab.app import EXIT_BAD_INPUT

                print(f"error: {_one_paragraph(exc)}", file=sys.stderr, flush=True)
                sys.exit(EXIT_BAD_INPUT)
            except OSError as exc:
                # Typically the output folder (hydra.run.dir) or the working directory is not writable.
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                from dropout_lab.app import EXIT_BAD_INPUT

                where = f" {exc.filename!r}" if exc.filename else ""
                print(f"error: cannot write{where}: {exc.strerror or exc}. Allowed: a writable output folder "
                      "(hydra.run.dir, default outputs/ in the working directory) and a writable working "
                      "directory for mlflow.db and optuna.journal.", file=sys.stderr, flush=True)
                sys.exit(EXIT_BAD_INPUT)

        return original(guarded)

    run_and_report._dropout_lab_compact = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def main() -> None:
    import hydra

    from dropout_lab.config import register_configs

    register_configs()
    _compact_config_errors()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_task)()


if __name__ == "__main__":
    main()
