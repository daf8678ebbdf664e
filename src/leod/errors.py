"""Exception types shared by every module.

Stages catch :class:`LeodError` at the top level and turn it into one clear line on
stderr and a non-zero exit, so each error message must name the offending file or key.
"""


class LeodError(Exception):
    """Base class of all errors that a user can fix (bad input, bad params, missing data)."""


class ConfigError(LeodError):
    """A params.yaml key is missing, unknown, of the wrong type or out of range."""


class DataFormatError(LeodError):
    """An input file is corrupt, truncated or inconsistent with its declared format."""


class MissingInputError(LeodError):
    """A required input path does not exist (usually: an upstream stage has not run)."""


class OutputError(LeodError):
    """An output cannot be written: disk full, file too large, read-only or a parent that is a file."""
