"""Run directories: `RunDir` owns their file names, state (finished or not), the resume rule, readers,
integrity and lock; plus naming new run directories.

A run directory is finished when run.json exists (written last); a re-run into it clears the old outputs
first (and what they produced: backtest folders), so it never mixes two runs. cryptonorm writes only into
folders it made (they carry a `.cryptonorm` marker, or a run.json) or empty ones; a folder of the user's is
refused unless `force`, and even then nothing cryptonorm did not write is replaced or removed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from cryptonorm.config import TABULAR_FILES, Config, build_config, read_yaml
from cryptonorm.errors import ConfigError, DataError, Hint, NotOurs, RunExists
from cryptonorm.pipeline.reports import REPORT_FILES

# ---------------------------------------------------------------- the file names of a run directory (one home)

CONFIG = "config.yaml"  # the config as trained (paths made absolute)
RUN_JSON = "run.json"  # written last: the marker of a finished run (seed, device, versions, data, file hashes)
MODEL = "model.pt"
SCALER = "scaler.json"  # {"scaler": {...}, "features": [names], "window": W}
FORECASTS = "forecasts.csv"  # every out-of-sample forecast (all splits)
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # forecast metrics of the validation and test splits
FOLDS = "folds.csv"  # walk-forward: one row per fold
PREDICTIONS = "predictions.csv"  # `predict` without -o
RESUME_STATE = "resume.pt"  # the training state after the last finished epoch (removed once the run finishes)
RESUME_FOLDS = "resume_folds.json"  # walk-forward: the finished folds' forecasts and records
LOCK = ".lock"  # held (flock) by the command writing the run directory
MARKER = ".cryptonorm"  # {"kind": "run" | "backtest" | "rebacktest" | "grid", "run": path}: a folder we made
BACKTEST_DIR = "backtest"  # the run's own backtest, written by `cryptonorm run` / `backtest RUN_DIR`
BACKTEST_PREFIX = "backtest-"  # re-backtests (backtest-<hash>) and grids (backtest-grid-<hash>) of the run

# What train writes; run.json last, as the marker of a finished run.
RUN_OUTPUTS = (RUN_JSON, METRICS, FORECASTS, SCALER, HISTORY, FOLDS, MODEL, PREDICTIONS, CONFIG, RESUME_STATE,
               RESUME_FOLDS, *TABULAR_FILES)  # TABULAR_FILES: a ridge / LightGBM run's (config/tabular.py)
# What a backtest folder holds (the reports' names are pipeline/reports.py's), and a grid folder.
EQUITY_CSV, TRADES_CSV, BACKTEST_YAML = "equity.csv", "trades.csv", "backtest.yaml"
BACKTEST_FILES = (EQUITY_CSV, TRADES_CSV, METRICS, BACKTEST_YAML, *REPORT_FILES, MARKER)
GRID_CSV, SELECTED_CSV, HEATMAP_PNG, GRID_JSON = "grid.csv", "selected.csv", "heatmap.png", "grid.json"
GRID_FILES = (GRID_CSV, SELECTED_CSV, HEATMAP_PNG, GRID_JSON, MARKER)
FORECAST_COLUMNS = ("timestamp", "close", "forecast", "y", "outcome", "split")  # what the backtest reads
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


def resolved_paths(cfg: Config) -> Config:
    """The config with data.dir, data.file, data.freqtrade_dir and data.funding_file made absolute, so a run
    directory works from any folder."""
    update: dict[str, Any] = {"dir": str(Path(cfg.data.dir).resolve())}
    for key in ("file", "freqtrade_dir", "funding_file"):
        if getattr(cfg.data, key):
            update[key] = str(Path(getattr(cfg.data, key)).resolve())
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


def is_temp(p: Path) -> bool:
    """A killed atomic write's leftover: `.NAME.XXXX.tmp` (a file, or a backtest's temp folder)."""
    return p.name.startswith(".") and p.name.endswith(".tmp")


def read_marker(folder: Path) -> dict[str, Any]:
    """FOLDER/.cryptonorm ({} when absent or unreadable): what made the folder, and for which run."""
    try:
        out = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def write_marker(folder: Path, kind: str, run: Path | None = None) -> None:
    """Mark FOLDER as cryptonorm's (`kind` of output, for `run`)."""
    from cryptonorm.atomic import write_text_atomic

    info = {"kind": kind, **({"run": str(Path(run).resolve())} if run is not None else {})}
    write_text_atomic(Path(folder) / MARKER, json.dumps(info) + "\n")


def contents(folder: Path) -> list[str]:
    """Names in FOLDER other than the lock and leftover temp files, sorted."""
    return sorted(p.name for p in Path(folder).iterdir() if not is_temp(p) and p.name != LOCK)


def remove_ours(folder: Path, names: Sequence[str]) -> None:
    """Remove the files `names` of FOLDER that cryptonorm wrote, and FOLDER itself if nothing else is left
    (a user's notes.md in it stays, with its folder)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (folder / name).unlink()
    for p in folder.iterdir() if folder.is_dir() else ():
        if is_temp(p):
            drop_temp(p)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty


def drop_temp(p: Path) -> None:
    """Remove a killed write's temp file, or our files in a temp backtest folder (a user's file there stays)."""
    if p.is_dir():
        remove_ours(p, (*BACKTEST_FILES, *GRID_FILES))
    else:
        p.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunDir:
    """One run directory: the one place that knows its file names, its state, how to read it and lock it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:  # rd / MODEL
        return self.path / name

    # ------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        """Training finished (run.json is written last)."""
        return (self.path / RUN_JSON).is_file()

    @property
    def is_run(self) -> bool:
        """A folder holding a config.yaml (a finished or an interrupted run)."""
        return self.path.is_dir() and (self.path / CONFIG).is_file()

    def saved_state(self) -> bool:
        """Whether it holds a saved training state to resume from (an epoch's, or finished folds')."""
        return (self.path / RESUME_STATE).exists() or (self.path / RESUME_FOLDS).exists()

    def ours(self) -> bool:
        """Made by cryptonorm: our marker of a run, a run.json, or (older versions) a config with a saved
        training state."""
        return (read_marker(self.path).get("kind") == "run" or self.finished
                or (self.is_run and self.saved_state()))

    def backtest_dirs(self) -> list[Path]:
        """backtest/, backtest-<hash>/ and backtest-grid-<hash>/: what the run's forecasts produced."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.is_dir() and not is_temp(p)
                      and (p.name == BACKTEST_DIR or p.name.startswith(BACKTEST_PREFIX)))

    # ------------------------------------------------------------ writing: check, lock, begin, clear

    def check_out(self, force: bool = False) -> None:
        """Refuse a file, and a non-empty folder cryptonorm did not make (unless `force`; even then files with
        our names that we did not write are refused: they would be replaced)."""
        p = self.path
        if not p.exists():
            return
        if not p.is_dir():
            raise ConfigError(f"{{out}} {p} is a file; choose a new or empty directory", hints=(Hint.OUT,))
        content = contents(p)
        if not content or self.ours():
            return
        shown = ", ".join(content[:4]) + (f" and {len(content) - 4} more" if len(content) > 4 else "")
        if not force:
            raise RunExists(f"{{out}} {p} is not empty and not a cryptonorm run directory (it holds {shown}); "
                            "choose a new or empty directory, or pass {force} to write beside them (they are "
                            "kept)", hints=(Hint.OUT, Hint.FORCE))
        clash = [n for n in (*RUN_OUTPUTS, BACKTEST_DIR) if (p / n).exists()]
        clash += [d.name for d in self.backtest_dirs() if d.name != BACKTEST_DIR]
        if clash:
            raise NotOurs(f"{{out}} {p} holds {', '.join(sorted(set(clash)))}, which cryptonorm did not write and "
                          "never replaces, not even with {force}; move them away or choose another directory",
                          hints=(Hint.OUT, Hint.FORCE))

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold RUN_DIR/.lock for the block (created with its parents): a second command writing the same run
        directory fails at once instead of racing; re-entrant within one process. Released when the process
        dies."""
        from filelock import FileLock, Timeout

        run_dir = self.path
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{{out}} {run_dir} is a file; choose a new or empty directory", hints=(Hint.OUT,))
        run_dir.mkdir(parents=True, exist_ok=True)
        key = run_dir.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        lock = FileLock(str(run_dir / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise DataError(f"{run_dir} is in use by another cryptonorm command (it holds {run_dir / LOCK}); "
                            "wait for it to finish or choose another {out}", hints=(Hint.OUT,)) from None
        _HELD[key] = 1
        try:
            yield self
        finally:
            del _HELD[key]
            lock.release()

    def begin(self, cfg: Config, force: bool) -> bool:
        """Make the directory ready for `cfg`'s training (call it under the lock); True when it resumes an
        interrupted run.

        A folder we did not make is refused (`check_out`); a finished run (run.json) is replaced only with
        `force`, with everything it produced; an interrupted one with a saved training state resumes when its
        config is the same (else a ConfigError names the differing keys); anything else starts from scratch.
        `cfg` is the config as the run stores it (`resolved_paths`).
        """
        self.check_out(force)
        resume = not force and self.is_run and self.saved_state() and not self.finished
        if not force and self.finished:
            raise RunExists(f"{{out}} {self.path} holds a finished run (run.json); pass {{force}} to replace it, or "
                            "choose another {out}", hints=(Hint.FORCE, Hint.OUT))
        if resume:
            differ = config_diff(self.config().to_dict(), cfg.to_dict())
            if differ:
                shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
                raise ConfigError(f"{{out}} {self.path} holds an interrupted run with another config ({shown} "
                                  "differ); run it with the same config to resume, or pass {force} to start over",
                                  hints=(Hint.OUT, Hint.FORCE))
            return True
        self.clear()
        write_marker(self.path, "run")
        return False

    def clear(self) -> None:
        """Remove an earlier run's outputs (run.json first), what they produced (our files in its backtest
        folders) and leftover temp files; files cryptonorm did not write stay."""
        for name in RUN_OUTPUTS:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for folder in self.backtest_dirs():
            remove_ours(folder, (*BACKTEST_FILES, *GRID_FILES))
        for p in self.path.iterdir():
            if is_temp(p):  # a killed atomic write: a temp file, or a backtest's temp folder
                with contextlib.suppress(OSError):
                    drop_temp(p)

    def remove_if_empty(self) -> None:
        """Remove the directory if it holds nothing but its lock and marker (a command refused early)."""
        with contextlib.suppress(OSError):
            if all(p.name in (LOCK, MARKER) for p in self.path.iterdir()):
                for name in (LOCK, MARKER):
                    (self.path / name).unlink(missing_ok=True)
                self.path.rmdir()

    # ------------------------------------------------------------ readers

    def config(self) -> Config:
        """config.yaml, validated."""
        p = self.path / CONFIG
        if not p.exists():
            raise ConfigError(f"{self.path} is not a run directory (no {CONFIG}); pass the directory that "
                              "`cryptonorm train` printed")
        return build_config(read_yaml(p), source=str(p))

    def finished_config(self) -> Config:
        """The config of a run whose training finished."""
        cfg = self.config()
        if not self.finished:
            raise DataError(f"{self.path} is an unfinished run (no {RUN_JSON}): its training was interrupted; "
                            "train again with the same {out}", hints=(Hint.OUT,))
        return cfg

    def info(self) -> dict[str, Any]:
        """run.json as a mapping (DataError when it is unreadable or not one)."""
        return _json_object(self.path / RUN_JSON)

    def recorded_hashes(self) -> dict[str, str]:
        """{file name: SHA-256} recorded in run.json ({} for runs from before hashes were recorded)."""
        files = self.info().get("files")
        if files is None:
            return {}
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise DataError(f"{self.path / RUN_JSON}: its 'files' entry is not a mapping of file names to "
                            "SHA-256 hashes: it was edited; restore it or train the run again")
        return files

    def verify(self, names: Sequence[str] | None = None) -> None:
        """DataError naming the first checked file whose SHA-256 differs from run.json's (integrity.py)."""
        from cryptonorm.pipeline.integrity import CHECKED, verify_hashes

        verify_hashes(self.path, self.recorded_hashes(), CHECKED if names is None else names)

    def scaler(self, model: str = MODEL) -> dict[str, Any]:
        """scaler.json: {"scaler": {...}, "features": [names], "window": W} (and "vol_floor" of a volatility
        run), beside the run's `model` file; DataError naming the problem."""
        path = self.path / SCALER
        if not (self.path / model).exists() or not path.exists():
            raise DataError(f"{self.path} has no {model}/{SCALER}; the training did not finish, train again")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise DataError(f"{path} is not valid JSON{where}: it was truncated or edited; restore it or train "
                            "the run again") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("scaler"), dict) or not isinstance(
                meta.get("features"), list) or not isinstance(meta.get("window"), int):
            raise DataError(f"{path} lacks the scaler, features or window entries: it was edited; restore it or "
                            "train the run again")
        return meta

    def forecasts(self, columns: Sequence[str] = FORECAST_COLUMNS) -> pd.DataFrame:
        """forecasts.csv (every saved out-of-sample forecast, all splits), with at least `columns`."""
        path = self.path / FORECASTS
        if not path.exists():
            raise DataError(f"{path} not found; train first (`cryptonorm train CONFIG`)")
        return read_table(path, columns, "train the run again")

    def history(self) -> pd.DataFrame:
        """history.csv: one row per epoch."""
        return read_table(self.path / HISTORY, ("epoch",), "train the run again")

    def metrics(self) -> dict[str, Any]:
        """metrics.json: forecast metrics of the validation and test splits."""
        return _json_object(self.path / METRICS)


def _json_object(path: Path) -> dict[str, Any]:
    """A run file holding one JSON object (DataError, saying to train again, when unreadable or not one)."""
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} cannot be read ({e}); train the run again") from None
    if not isinstance(out, dict):
        raise DataError(f"{path} is not a JSON object: it was edited; train the run again")
    return out


def read_table(path: Path, columns: Sequence[str], fix: str) -> pd.DataFrame:
    """A CSV that cryptonorm wrote, with at least `columns` (timestamps numeric); DataError naming what is
    wrong with it (empty, not CSV, a column missing)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        why = "it is empty" if isinstance(e, pd.errors.EmptyDataError) else "it is not a valid CSV file"
        raise DataError(f"{path} cannot be read: {why}; it was truncated or edited: {fix}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)} column(s): it was edited; {fix}")
    if "timestamp" in columns and not pd.api.types.is_numeric_dtype(df["timestamp"]):
        raise DataError(f"{path}: its timestamp column is not numeric (milliseconds): it was edited; {fix}")
    return df


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


# ---------------------------------------------------------------- functions over RunDir (older call sites)


def load_run_config(run_dir: Path) -> Config:
    """`RunDir(run_dir).config()`: the config.yaml of a run directory, validated."""
    return RunDir(run_dir).config()


def finished_run(run_dir: Path) -> Config:
    """`RunDir(run_dir).finished_config()`: the config of a run whose training finished."""
    return RunDir(run_dir).finished_config()


def is_run_dir(path: Path) -> bool:
    """True for a directory holding a config.yaml (a finished or interrupted run)."""
    return RunDir(path).is_run
