"""The project's own exceptions. The CLI catches CryptonormError once and prints one line."""

from __future__ import annotations

import errno
import os


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


class PathError(CryptonormError):
    """A file or folder cannot be read or written: permissions, a file where a folder should be, ... (exit 1)."""


_WHY = {
    errno.EACCES: ("permission denied", "choose a location you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to, or fix its permissions"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "choose a path inside a folder"),
    errno.EEXIST: ("it already exists", "remove it or choose another path"),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "give a file name"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another location"),
    errno.EROFS: ("the file system is read-only", "choose another location"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


def path_error(e: OSError) -> PathError:
    """One line for an OSError on a path: which path, what is wrong with it and what to do (no class names)."""
    path = e.filename if e.filename is not None else "?"
    code = e.errno or 0
    if code == errno.EEXIST and os.path.isfile(str(path)):  # a folder was to be made where a file is
        code = errno.ENOTDIR
        why, fix = "it is a file, not a folder", "choose another path or move the file"
    else:
        why, fix = _WHY.get(code, (e.strerror or "the operating system refused", "check the path"))
    return PathError(f"{path}: {why}; {fix}")
