"""Run directories: naming, what a run writes, clearing an earlier run, reading a saved one, versions.

A run directory is finished when run.json exists (written last); a re-run into it clears the old outputs
first, so it never mixes two runs.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm import __version__
from cryptonorm.config import Config, build_config, read_yaml
from cryptonorm.config.tabular import TABULAR_FILES
from cryptonorm.errors import ConfigError, DataError

RESUME_STATE = "resume.pt"  # the training state after the last finished epoch (removed once the run finishes)
RESUME_FOLDS = "resume_folds.json"  # walk-forward: the finished folds' forecasts and records
LOCK = ".lock"  # held (flock) by the command writing the run directory

# What train writes; run.json last, as the marker of a finished run.
RUN_OUTPUTS = ("run.json", "metrics.json", "forecasts.csv", "scaler.json", "history.csv", "folds.csv", "model.pt",
               "predictions.csv", "config.yaml", RESUME_STATE, RESUME_FOLDS,
               *TABULAR_FILES)
_HELD: dict[Path, int] = {}  # run directories this process holds the lock of (the lock is re-entrant)


def new_run_dir(cfg: Config, root: Path = Path("runs")) -> Path:
    """runs/<name>-<UTC timestamp>[-n]: never reuses an existing directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = root / f"{cfg.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def versions() -> dict[str, str]:
    """Versions of cryptonorm, python, the platform and the libraries a run depends on (for run.json)."""
    import torch

    out = {"cryptonorm": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__}
    with contextlib.suppress(Exception):  # the installed version, without importing ccxt (slow, unused here)
        from importlib.metadata import version

        out["ccxt"] = version("ccxt")
    return out


def resolved_paths(cfg: Config) -> Config:
    """The config with data.dir, data.file, data.freqtrade_dir and data.funding_file made absolute, so a run
    directory works from any folder."""
    update: dict[str, Any] = {"dir": str(Path(cfg.data.dir).resolve())}
    for key in ("file", "freqtrade_dir", "funding_file"):
        if getattr(cfg.data, key):
            update[key] = str(Path(getattr(cfg.data, key)).resolve())
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[Path]:
    """Hold RUN_DIR/.lock for the block (created with its parents): a second command writing the same run
    directory fails at once instead of racing; re-entrant within one process. Released when the process dies."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a new or empty directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield run_dir
        finally:
            _HELD[key] -= 1
        return
    lock = FileLock(str(run_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DataError(f"{run_dir} is in use by another cryptonorm command (it holds {run_dir / LOCK}); wait "
                        "for it to finish or choose another --out") from None
    _HELD[key] = 1
    try:
        yield run_dir
    finally:
        del _HELD[key]
        lock.release()


def begin_run(run_dir: Path, cfg: Config, force: bool) -> bool:
    """Make `run_dir` ready for `cfg`'s training, under its lock; True when it resumes an interrupted run.

    A finished run (run.json) is replaced only with `force`; an interrupted one with a saved training state
    resumes when its config is the same (else a ConfigError names the differing keys); anything else starts
    from scratch. `cfg` is the config as the run stores it (`resolved_paths`).
    """
    check_run_dir(run_dir)
    if force or not (run_dir / "config.yaml").exists():
        clear_run_outputs(run_dir)
        return False
    if (run_dir / "run.json").exists():
        raise ConfigError(f"--out {run_dir} holds a finished run (run.json); pass --force to replace it, or "
                          "choose another --out")
    if not saved_state(run_dir):
        clear_run_outputs(run_dir)  # interrupted before its first epoch ended: nothing to resume
        return False
    differ = config_diff(load_run_config(run_dir).to_dict(), cfg.to_dict())
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(f"--out {run_dir} holds an interrupted run with another config ({shown} differ); "
                          "run it with the same config to resume, or pass --force to start over")
    return True


def saved_state(run_dir: Path) -> bool:
    """Whether `run_dir` holds a saved training state to resume from (an epoch's, or finished folds')."""
    return (run_dir / RESUME_STATE).exists() or (run_dir / RESUME_FOLDS).exists()


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_run_dir(run_dir: Path) -> None:
    """Refuse a --out that is a file, or a non-empty directory that is not a cryptonorm run directory."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a new or empty directory")
    content = [p for p in run_dir.iterdir() if not _is_temp(p) and p.name != LOCK]
    if content and not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--out {run_dir} exists and is not a cryptonorm run directory; choose an empty "
                          "or new directory")


def clear_run_outputs(run_dir: Path) -> None:
    """Remove an earlier run's outputs, the completion marker run.json first, and leftover temp files."""
    for name in RUN_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / "backtest", ignore_errors=True)
    for p in run_dir.iterdir():
        if _is_temp(p):  # a killed atomic write: a temp file, or a backtest's temp folder
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()


def remove_if_empty(run_dir: Path) -> None:
    """Remove a run directory that holds nothing (but its lock file): a command refused before writing."""
    with contextlib.suppress(OSError):
        if all(p.name == LOCK for p in run_dir.iterdir()):
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()


def load_run_config(run_dir: Path) -> Config:
    """The config.yaml of a run directory, validated."""
    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); pass the directory that "
                          "`cryptonorm train` printed")
    return build_config(read_yaml(p), source=str(p))


def finished_run(run_dir: Path) -> Config:
    """The config of a run whose training finished (run.json is written last)."""
    cfg = load_run_config(run_dir)
    if not (Path(run_dir) / "run.json").exists():
        raise DataError(f"{run_dir} is an unfinished run (no run.json): its training was interrupted; "
                        "train again with the same --out")
    return cfg


def is_run_dir(path: Path) -> bool:
    """True for a directory holding a config.yaml (a finished or interrupted run)."""
    return path.is_dir() and (path / "config.yaml").exists()
