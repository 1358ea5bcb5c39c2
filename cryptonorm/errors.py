"""The project's own exceptions. The CLI catches CryptonormError once and prints one line."""

from __future__ import annotations

import enum
import errno
import os


class Hint(enum.Enum):
    """What the user can do about an error, named once: only the front ends turn it into words.

    A library message spells the option as a `{force}` or `{out}` slot; `cli/` fills it with `--force` /
    `--out`, the Python API (the default, `str(error)`) with `force=True` / `out`.
    """

    FORCE = "force"  # replace or restart what is there
    OUT = "out"  # choose another output folder


# How the Python API spells each hint's option (cli/app.py has the command line's words).
API_WORDS = {Hint.FORCE: "force=True", Hint.OUT: "out"}


class CryptonormError(Exception):
    """Base class: a user-facing error with a one-line message and an exit code.

    `hints`: the options the message names through `{force}`/`{out}` slots (see Hint); `str(e)` fills them
    with the Python API's words, `e.render(words)` with another front end's.
    """

    exit_code = 1

    def __init__(self, message: str = "", *, hints: tuple[Hint, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.hints = message, hints

    def render(self, words: dict[Hint, str]) -> str:
        """The message with every hint slot filled with `words` (an option's name in one front end)."""
        text = self.message
        for hint in Hint:
            text = text.replace("{" + hint.value + "}", words.get(hint, API_WORDS[hint]))
        return text

    def __str__(self) -> str:
        return self.render(API_WORDS)


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


class RunExists(ConfigError):
    """The output folder holds a finished run, or something that is not ours: replacing it needs {force}."""


class NotOurs(ConfigError):
    """A folder or file cryptonorm did not write is in the way; it is never replaced or removed."""


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
