"""Run directories: naming, what a run writes, clearing an earlier run, reading a saved one, versions.

A run directory is finished when run.json exists (written last); a re-run into it clears the old outputs
first, so it never mixes two runs.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm import __version__
from cryptonorm.config import Config, build_config, read_yaml
from cryptonorm.errors import ConfigError, DataError

# What train writes; run.json last, as the marker of a finished run.
RUN_OUTPUTS = ("run.json", "metrics.json", "forecasts.csv", "scaler.json", "history.csv", "folds.csv", "model.pt",
               "predictions.csv", "config.yaml")


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


def check_run_dir(run_dir: Path) -> None:
    """Refuse a --out that is a file, or a non-empty directory that is not a cryptonorm run directory."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a new or empty directory")
    content = [p for p in run_dir.iterdir() if not _is_temp(p)]
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
        if _is_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()


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
