"""User-facing errors: one clear paragraph, no traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input (a config value, a data file, a storage URL).

    The message is a complete one-paragraph explanation naming the key, the value received
    and what is allowed; the command line prints it and exits non-zero without a traceback.
    """


def bad_value(key: str, value: object, allowed: str) -> ConfigError:
    """Build the standard error for a config value outside its allowed range."""
    return ConfigError(f"invalid value for '{key}': got {value!r}; allowed: {allowed}.")


class TrackingError(RuntimeError):
    """MLflow refused a write, or its writer process ended (the message says which)."""
