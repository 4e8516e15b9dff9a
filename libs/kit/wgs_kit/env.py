"""Typed reads of environment variables for the per-service settings objects."""

import os


class SettingsError(ValueError):
    """An environment variable is missing or malformed."""


def env_str(name: str, default: str | None = None) -> str:
    """The variable's value, or `default`; raise when neither exists."""
    value = os.environ.get(name, default)
    if value is None:
        raise SettingsError(f"environment variable {name} is required")
    return value


def env_int(name: str, default: int) -> int:
    """The variable as an integer, or `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    """The variable as a float, or `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def env_float_between(name: str, default: float, low: float, high: float) -> float:
    """The variable as a float from `low` to `high`, or `default`; raise outside that range."""
    value = env_float(name, default)
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """The variable as a boolean (`1/true/yes/on`), or `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}
