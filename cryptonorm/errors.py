"""The project's own exceptions. The CLI catches CryptonormError once and prints one line."""

from __future__ import annotations


class CryptonormError(Exception):
    """Base class: a user-facing error with a one-line message and an exit code."""

    exit_code = 1


class ConfigError(CryptonormError):
    """A config file, a `--set` override or a command-line option is wrong (exit 2)."""

    exit_code = 2


class UsageError(CryptonormError):
    """The command line itself is wrong (exit 2)."""

    exit_code = 2


class DataError(CryptonormError):
    """Candles are missing, empty, malformed or too short (exit 1)."""


class ExchangeError(CryptonormError):
    """The exchange refused or failed in a way retrying cannot fix (exit 1)."""


class TransientExchangeError(ExchangeError):
    """A network error, time-out or rate limit: worth retrying with backoff."""


class TrainingError(CryptonormError):
    """Training cannot go on (a NaN loss, an unavailable device)."""
