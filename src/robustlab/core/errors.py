"""The errors a user can cause. Each carries a one-line message naming the key or path, the value and what
is allowed; the command line prints it and exits with status 2."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (one-line message)."""


class DataError(RuntimeError):
    """A data file is missing or malformed (one-line message naming the path and how to get it)."""
