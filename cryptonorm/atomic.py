"""Atomic file writes: a temp file in the destination folder, fsync, then one rename over the target.
Text, JSON (NaN-safe) and CSV writers built on it are here too: one writer for every layer; and the
tolerant reader of the JSON objects they write (`read_json_object`).

Readers see the old file or the new one, never half of one; a killed writer leaves at most a hidden
`.NAME.XXXXXXXX.tmp` beside the target (data.store.consolidate and train clear those up).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# mkstemp creates files 0600; finished files get the usual mode under the user's umask
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK  # folders made with mkdtemp (0700) and renamed into place


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; when the block succeeds it is fsynced and renamed over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file the user asked for, never the temp file
        raise _renamed(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        raise _renamed(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def _renamed(e: OSError, path: Path) -> OSError:
    """The same error about `path` when it was about the temp file beside it (or about nothing named)."""
    name = None if e.filename is None else Path(e.filename).name
    if name is None or (name.startswith(f".{path.name}.") and name.endswith(".tmp")):
        return type(e)(e.errno, e.strerror, str(path))
    return e


def write_text_atomic(path: Path, text: str) -> None:
    """Write text atomically: readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """Floats that are NaN/inf become None; numpy scalars become Python numbers."""
    import numpy as np  # here, not at import: `cryptonorm --help` imports this module

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """JSON with NaN/inf as null, atomically."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, df: Any, times: tuple[str, ...] = ()) -> None:
    """A DataFrame as CSV, atomically (no index).

    Millisecond time columns (`timestamp`, `*_time`, and the names in `times`) get a readable UTC twin right
    after them (`datetime`, `*_datetime`, `NAME_datetime`: 'YYYY-MM-DD HH:MM:SS'), for people and spreadsheets;
    the millisecond column stays the one programs read.
    """
    write_text_atomic(path, with_datetimes(df, times).to_csv(index=False))


def with_datetimes(df: Any, times: tuple[str, ...] = ()) -> Any:
    """A copy of `df` with a readable UTC column beside every millisecond time column (see write_csv)."""
    import pandas as pd  # here, not at import: `cryptonorm --help` imports this module

    out = df
    for col in list(df.columns):
        if not (col == "timestamp" or str(col).endswith("_time") or col in times):
            continue
        twin = "datetime" if col == "timestamp" else (f"{col[:-5]}_datetime" if str(col).endswith("_time")
                                                      else f"{col}_datetime")
        if twin in df.columns or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        text = pd.to_datetime(df[col], unit="ms", utc=True, errors="coerce").dt.strftime("%Y-%m-%d %H:%M:%S")
        if out is df:
            out = df.copy()
        out.insert(out.columns.get_loc(col) + 1, twin, text)
    return out


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or not an object (listings
    and resumable sweeps treat such a file as absent rather than failing)."""
    try:
        out = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None
