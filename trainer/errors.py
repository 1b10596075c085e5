"""The errors a user must act on, in one module that imports nothing: the CLI turns each into one line and exit 2,
and any module can raise them without importing the module that usually does (which made import circles)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config problem the user must fix; the CLI prints it as one line."""


class RunError(RuntimeError):
    """The run cannot proceed (bad input, or a directory that is not what the command needs)."""


class ResultError(ValueError):
    """``result.json`` cannot be read as a result of this version (printed as one line)."""
