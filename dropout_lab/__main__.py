"""``python -m dropout_lab [overrides]``: a thin Hydra entry point around :func:`dropout_lab.app.run`."""

from __future__ import annotations

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

    code = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    if code:
        sys.exit(code)


def main() -> None:
    import hydra

    from dropout_lab.config import register_configs

    register_configs()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_task)()


if __name__ == "__main__":
    main()
