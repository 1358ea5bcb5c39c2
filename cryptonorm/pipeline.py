"""The pipeline steps: fetch, features, audit, train, predict, backtest, run.

This module owns paths, run directories and what is written to disk; the computation lives in the core
modules. Every step can be called from Python with a `Config` (see `config.load_config`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cryptonorm import __version__
from cryptonorm.atomic import atomic_path
from cryptonorm.candles import (
    Gap,
    data_hash,
    find_gaps,
    from_rows,
    locked,
    merge,
    parse_date,
    read_store,
    read_user_file,
    store_path,
    timeframe_ms,
    write_atomic,
)
from cryptonorm.config import Config, DataConfig, build_config, dump_yaml, read_yaml
from cryptonorm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cryptonorm.exchange import Retry

ProgressFn = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- small file helpers


def write_text_atomic(path: Path, text: str) -> None:
    """Write text atomically: readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """Floats that are NaN/inf become None; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
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
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, df: pd.DataFrame) -> None:
    write_text_atomic(path, df.to_csv(index=False))


# ---------------------------------------------------------------- fetch


@dataclass
class FetchSummary:
    """What one fetch left in the store for one market."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    new_rows: int
    first: int | None
    last: int | None
    gaps: list[Gap] = field(default_factory=list)
    source: str = "store"  # "store", or "file" for data.file

    @property
    def missing_bars(self) -> int:
        return sum(g.missing for g in self.gaps)


def _pending_path(path: Path) -> Path:
    return path.parent / f".{path.name}.pending.json"


def _read_pending(path: Path) -> list[tuple[int, int | None]]:
    """Ranges an interrupted fetch had planned and not finished (so a hole is never left behind)."""
    p = _pending_path(path)
    try:
        return [(int(a), None if b is None else int(b)) for a, b in json.loads(p.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _write_pending(path: Path, ranges: list[tuple[int, int | None]]) -> None:
    if ranges:
        write_text_atomic(_pending_path(path), json.dumps([list(r) for r in ranges]))
    else:
        with contextlib.suppress(OSError):
            _pending_path(path).unlink()


def _journal_dir(path: Path) -> Path:
    return path.parent / f".{path.name}.journal"


def _journal_parts(path: Path) -> list[Path]:
    j = _journal_dir(path)
    return sorted(j.glob("*.parquet")) if j.exists() else []


STALE_TEMP_S = 600.0  # a journal temp file this old belongs to a killed writer


def _remove_stale_temps(path: Path) -> None:
    """Temp files that killed atomic writes left. Called under the store lock: a temp file of the main
    store file is stale (its writer would hold the lock); a journal's only once it is old."""
    now = time.time()
    candidates = [(p, 0.0) for p in path.parent.glob(f".{path.name}.*.tmp")]
    journal = _journal_dir(path)
    if journal.exists():
        candidates += [(p, STALE_TEMP_S) for p in journal.glob(".*.tmp")]
    for p, age in candidates:
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime >= age:
                p.unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()  # only when empty


def consolidate(path: Path) -> pd.DataFrame:
    """Merge pending journal pages into the main store file (under the file lock), atomically."""
    with locked(path):
        _remove_stale_temps(path)
        parts = _journal_parts(path)
        frame = read_store(path)
        if not parts:
            return frame
        pieces = [frame]
        read = []
        for p in parts:
            try:  # parts are written atomically; one that cannot be read is set aside, never deleted
                pieces.append(pd.read_parquet(p))
                read.append(p)
            except Exception:
                with contextlib.suppress(OSError):
                    p.rename(p.with_suffix(".unreadable"))
        merged = merge(*pieces)
        write_atomic(merged, path)
        for p in read:
            with contextlib.suppress(OSError):
                p.unlink()
        return merged


def fetch(cfg: Config, *, progress: ProgressFn | None = None, retry: Retry | None = None) -> list[FetchSummary]:
    """Download every `data.symbol` into the store (incremental, resumable), or validate `data.file`."""
    from cryptonorm.exchange import Retry, check_symbol, open_source, pages

    data = cfg.data
    if data.file:
        df = _filter_range(read_user_file(data.file, data.timeframe), cfg)
        if len(df) == 0:
            raise DataError(f"data.file {data.file!r} has no candles between data.since and data.until")
        ts = df["timestamp"].to_numpy()
        return [FetchSummary("file", data.symbols[0], data.timeframe, Path(data.file), len(df), 0,
                             int(ts[0]), int(ts[-1]), find_gaps(ts, data.timeframe), source="file")]
    retry = retry or Retry()
    source = open_source(data)
    step = timeframe_ms(data.timeframe)
    until = parse_date(data.until) if data.until else None
    out = []
    for symbol in data.symbols:
        check_symbol(source, symbol, data.timeframe, retry)
        path = store_path(data.dir, store_folder(data), symbol, data.timeframe)
        stored = consolidate(path)  # a killed earlier run may have left journal pages: keep them
        before = len(stored)
        since = parse_date(data.since) if data.since else _first_available(source, stored)
        ranges = _plan(stored, since, until, step, _read_pending(path))
        _write_pending(path, ranges)
        now = source.milliseconds()
        expected = sum(((min(u, now) if u else now) - s) // step for s, u in ranges if (u or now) > s)
        got = 0
        journal = _journal_dir(path)
        for i, (s, u) in enumerate(ranges):
            n_pages = 0
            for rows in pages(source, symbol, data.timeframe, s, u, retry):
                frame = from_rows(rows)
                journal.mkdir(parents=True, exist_ok=True)
                write_atomic(frame, journal / f"{int(frame['timestamp'].min()):015d}.parquet")
                got += len(frame)
                n_pages += 1
                if progress:
                    progress({"symbol": symbol, "candles": got, "expected": max(expected, got), "pages": n_pages})
            _write_pending(path, ranges[i + 1:])
        final = consolidate(path)
        with contextlib.suppress(OSError):
            journal.rmdir()
        ts = final["timestamp"].to_numpy()
        out.append(FetchSummary(source.id, symbol, data.timeframe, path, len(final), len(final) - before,
                                int(ts[0]) if len(ts) else None, int(ts[-1]) if len(ts) else None,
                                find_gaps(ts, data.timeframe)))
    return out


def _plan(stored: pd.DataFrame, since: int, until: int | None, step: int,
          pending: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """The ranges still to download: before the first stored candle, after the last, and whatever an
    interrupted run had planned (resumed after the last candle it stored inside that range)."""
    ts = stored["timestamp"].to_numpy()
    ranges: list[tuple[int, int | None]] = []
    for s, u in pending:
        inside = ts[(ts >= s) & ((ts < u) if u is not None else True)]
        ranges.append((int(inside[-1]) + step if len(inside) else s, u))
    if len(ts):
        first, last = int(ts[0]), int(ts[-1])
        if since < first:
            ranges.append((since, first))  # prepend what an earlier `since` asks for
        if until is None or last + step < until:
            ranges.append((max(since, last + step), until))
    else:
        ranges.append((since, until))
    return [(s, u) for s, u in ranges if u is None or s < u]


def _first_available(source: Any, stored: pd.DataFrame) -> int:
    """With no data.since: the synthetic market's start, or the exchange's earliest candle (since=0)."""
    start = getattr(source, "start_ms", None)
    if callable(start):
        return int(start("1m"))
    return int(stored["timestamp"].iloc[0]) if len(stored) else 0


def _filter_range(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    ts = df["timestamp"]
    mask = pd.Series(True, index=df.index)
    if cfg.data.since:
        mask &= ts >= parse_date(cfg.data.since)
    if cfg.data.until:
        mask &= ts < parse_date(cfg.data.until)
    return df[mask].reset_index(drop=True)


def candle_path(cfg: Config) -> Path:
    """The store file (or data.file) that train/backtest read for this config."""
    if cfg.data.file:
        return Path(cfg.data.file)
    return store_path(cfg.data.dir, store_folder(cfg.data), _one_symbol(cfg), cfg.data.timeframe)


def store_folder(data: DataConfig) -> str:
    """The store's folder for an exchange. The synthetic market's depends on its parameters: two markets
    with another seed or signal must never share (and silently mix) one file."""
    if data.exchange != "synthetic":
        return data.exchange
    params = json.dumps(data.synthetic.model_dump(mode="json"), sort_keys=True)
    return f"synthetic/{hashlib.sha256(params.encode()).hexdigest()[:10]}"


def _one_symbol(cfg: Config) -> str:
    syms = cfg.data.symbols
    if len(syms) != 1:
        raise ConfigError(f"data.symbol lists {len(syms)} markets; training and backtests take one: "
                          f"set data.symbol to one of {', '.join(syms)}")
    return syms[0]


def load_candles(cfg: Config) -> pd.DataFrame:
    """The candles an experiment uses: data.file, or the store, cut to [data.since, data.until)."""
    if cfg.data.file:
        df = read_user_file(cfg.data.file, cfg.data.timeframe)
    else:
        path = candle_path(cfg)
        if not path.exists() and not _journal_parts(path):
            raise DataError(f"no candles stored at {path}; run `cryptonorm fetch -c CONFIG` first "
                            "(or `cryptonorm run CONFIG`, which fetches what is missing)")
        df = consolidate(path) if _journal_parts(path) else read_store(path)
    df = _filter_range(df, cfg)
    if len(df) == 0:
        raise DataError(f"no candles in {candle_path(cfg)} between data.since={cfg.data.since} and "
                        f"data.until={cfg.data.until}; widen the range or fetch again")
    return df


def have_candles(cfg: Config) -> bool:
    """True when the store already covers data.since .. data.until (what `run` needs before training)."""
    if cfg.data.file:
        return True
    path = candle_path(cfg)
    if _journal_parts(path) or not path.exists():
        return False
    ts = read_store(path)["timestamp"]
    if len(ts) == 0:
        return False
    step = timeframe_ms(cfg.data.timeframe)
    if cfg.data.since and int(ts.iloc[0]) > parse_date(cfg.data.since) + step:
        return False
    if cfg.data.until:
        until = min(parse_date(cfg.data.until), int(time.time() * 1000) // step * step)
        if int(ts.iloc[-1]) + step < until:
            return False
    return True


# ---------------------------------------------------------------- features and audit


def features(cfg: Config, out: Path) -> tuple[Path, int, int]:
    """Write the raw (unscaled) feature table with timestamp and OHLCV to `out` (.parquet or .csv)."""
    from cryptonorm.indicators import compute_features

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"-o {out}: use a .parquet or .csv file name")
    table = compute_features(load_candles(cfg), cfg.features)
    if suffix == ".parquet":
        write_atomic(table, out)
    else:
        write_csv(out, table)
    return out, len(table), table.shape[1]


def audit(cfg: Config) -> Any:
    """Run the look-ahead audit on the user's own config and data."""
    from cryptonorm.dataset import audit as run_audit

    return run_audit(load_candles(cfg), cfg)


# ---------------------------------------------------------------- train


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
    import torch

    out = {"cryptonorm": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__}
    with contextlib.suppress(Exception):
        import ccxt

        out["ccxt"] = ccxt.__version__
    return out


HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "lr", "seconds", "samples_per_s"]


@dataclass
class TrainSummary:
    run_dir: Path
    metrics: dict[str, Any]
    device: str
    stopped: str
    best_epoch: int
    seconds: float


def train(cfg: Config, out: Path | None = None, *, progress: ProgressFn | None = None,
          candles: pd.DataFrame | None = None) -> TrainSummary:
    """Train one model; write config, checkpoint, scaler, history, metrics and forecasts to a run dir."""
    t0 = time.time()
    if candles is None:
        if cfg.data.exchange == "synthetic" and not cfg.data.file and not have_candles(cfg):
            fetch(cfg)  # the offline market is generated on demand: no network, deterministic
        candles = load_candles(cfg)
    from cryptonorm import dataset, training  # torch is imported only once there is data to train on

    prep = dataset.prepare(candles, cfg)
    device = training.resolve_device(cfg.train.device)
    run_dir = Path(out) if out is not None else new_run_dir(cfg)
    _check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _clear_run_outputs(run_dir)  # a re-run into the same directory never leaves a mix of two runs
    write_text_atomic(run_dir / "config.yaml", dump_yaml(resolved_paths(cfg)))
    training.seed_everything(cfg.seed, cfg.train.deterministic)
    if cfg.backtest.walk_forward.enabled:
        ds, res, forecasts, split_of, folds = _walk_forward(prep, cfg, device, progress, run_dir)
    else:
        ds = dataset.split(prep, cfg)
        res = training.fit(ds, cfg, device, progress=progress, checkpoint=run_dir / "model.pt")
        forecasts = np.full(len(ds.y), np.nan)
        split_of = np.full(len(ds.y), "", dtype=object)
        for name in ("train", "val", "test"):
            idx = getattr(ds, f"{name}_idx")
            if len(idx):
                forecasts[idx] = training.predict(res.model, ds, idx, device)
                split_of[idx] = name
        folds = []
    write_csv(run_dir / "history.csv", pd.DataFrame(res.history).reindex(columns=HISTORY_COLUMNS))
    write_json(run_dir / "scaler.json", {"scaler": ds.scaler.to_dict(), "features": ds.feature_names,
                                          "window": ds.window})
    metrics = _split_metrics(ds, forecasts, split_of, cfg)
    metrics.update({"stopped": res.stopped, "best_epoch": res.best_epoch, "message": res.message})
    if folds:
        metrics["walk_forward"] = {"folds": len(folds), "mode": cfg.backtest.walk_forward.mode,
                                   "step": cfg.backtest.walk_forward.step,
                                   "train_bars": cfg.backtest.walk_forward.train_bars}
        write_csv(run_dir / "folds.csv", pd.DataFrame(folds))
    write_json(run_dir / "metrics.json", metrics)
    _write_forecasts(run_dir, ds, forecasts, split_of)
    run_info = {"seed": cfg.seed, "device": str(device), "versions": versions(),
                "data": {"path": str(candle_path(cfg)), "hash": data_hash(candles), "rows": len(candles),
                         "first": int(candles["timestamp"].iloc[0]), "last": int(candles["timestamp"].iloc[-1])},
                "seconds": round(time.time() - t0, 3), "stopped": res.stopped,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(run_dir / "run.json", run_info)
    return TrainSummary(run_dir, metrics, str(device), res.stopped, res.best_epoch, time.time() - t0)


def resolved_paths(cfg: Config) -> Config:
    """The config with data.dir and data.file made absolute, so a run directory works from any folder."""
    update: dict[str, Any] = {"dir": str(Path(cfg.data.dir).resolve())}
    if cfg.data.file:
        update["file"] = str(Path(cfg.data.file).resolve())
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


def _split_metrics(ds: Any, forecasts: np.ndarray, split_of: np.ndarray, cfg: Config) -> dict[str, Any]:
    """Forecast metrics of the validation and test samples, beside the persistence baseline."""
    from cryptonorm.metrics import forecast_metrics

    kind = cfg.target.kind
    out: dict[str, Any] = {"target": kind, "horizon": cfg.target.horizon, "samples": {}, "dropped": ds.dropped}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero((split_of == name) & np.isfinite(forecasts))
        out["samples"][name] = len(idx)
        if name != "train" and len(idx):
            out[name] = forecast_metrics(forecasts[idx], ds.y[idx].astype("float64"), kind)
            out[name]["persistence"] = _persistence_metrics(ds, idx, kind)
    return out


def _walk_forward(prep: Any, cfg: Config, device: Any, progress: ProgressFn | None,
                  run_dir: Path) -> tuple[Any, Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Refit every `step` bars on a rolling/expanding window; every test forecast is out of sample.

    Fold k predicts rows [s, s + step); it trains on rows before s - embargo (the last `val_fraction` of
    them, after another embargo, for early stopping), with the scaler refitted on its own training rows.
    """
    from cryptonorm import dataset, training

    wf = cfg.backtest.walk_forward
    n = len(prep.timestamps)
    embargo = cfg.split.embargo if cfg.split.embargo is not None else prep.horizon + prep.window
    if wf.train_bars + 2 * embargo + wf.step > n:
        raise ConfigError(f"backtest.walk_forward needs train_bars + 2 x embargo + step = "
                          f"{wf.train_bars + 2 * embargo + wf.step} bars, the data has {n}; lower "
                          "backtest.walk_forward.train_bars/step or use more data")
    forecasts = np.full(n, np.nan)
    split_of = np.full(n, "", dtype=object)
    folds: list[dict[str, Any]] = []
    ds = res = None
    start = wf.train_bars + embargo
    while start < n:
        stop = min(start + wf.step, n)
        fit_end = start - embargo  # labels of training samples end before the test windows begin
        fit_start = 0 if wf.mode == "expanding" else max(0, fit_end - wf.train_bars)
        n_val = max(1, int((fit_end - fit_start) * wf.val_fraction))
        val_start = fit_end - n_val
        train_end = val_start - embargo
        ds_k = dataset.fold(prep, slice(fit_start, train_end), slice(val_start, fit_end), slice(start, stop), cfg)
        if len(ds_k.train_idx) and len(ds_k.val_idx) and len(ds_k.test_idx):
            fold_progress = None if progress is None else (lambda d, k=len(folds): progress({**d, "fold": k}))
            res = training.fit(ds_k, cfg, device, progress=fold_progress, checkpoint=run_dir / "model.pt")
            forecasts[ds_k.test_idx] = training.predict(res.model, ds_k, ds_k.test_idx, device)
            split_of[ds_k.test_idx] = "test"
            ds = ds_k
            folds.append({"fold": len(folds), "train_start": int(prep.timestamps[fit_start]),
                          "train_end": int(prep.timestamps[train_end - 1]), "test_start": int(prep.timestamps[start]),
                          "test_end": int(prep.timestamps[stop - 1]), "train_samples": len(ds_k.train_idx),
                          "test_samples": len(ds_k.test_idx), "best_epoch": res.best_epoch, "stopped": res.stopped})
        start = stop
    if ds is None or res is None:
        raise DataError("walk-forward produced no fold with training, validation and test samples; "
                        "use more data or a smaller backtest.walk_forward.train_bars")
    return ds, res, forecasts, split_of, folds


# What train writes; run.json last, as the marker of a finished run.
RUN_OUTPUTS = ("run.json", "metrics.json", "forecasts.csv", "scaler.json", "history.csv", "folds.csv", "model.pt",
               "predictions.csv", "config.yaml")


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a new or empty directory")
    content = [p for p in run_dir.iterdir() if not _is_temp(p)]
    if content and not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--out {run_dir} exists and is not a cryptonorm run directory; choose an empty "
                          "or new directory")


def _clear_run_outputs(run_dir: Path) -> None:
    """Remove an earlier run's outputs, the completion marker run.json first, and leftover temp files."""
    import shutil

    for name in RUN_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / "backtest", ignore_errors=True)
    for p in run_dir.iterdir():
        if _is_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()


def finished_run(run_dir: Path) -> Config:
    """The config of a run whose training finished (run.json is written last)."""
    cfg = load_run_config(run_dir)
    if not (Path(run_dir) / "run.json").exists():
        raise DataError(f"{run_dir} is an unfinished run (no run.json): its training was interrupted; "
                        "train again with the same --out")
    return cfg


def _persistence_metrics(ds: Any, idx: np.ndarray, kind: str) -> dict[str, float]:
    """The naive baseline: tomorrow looks like today (last bar's log return, or its sign)."""
    from cryptonorm.metrics import forecast_metrics

    last = np.zeros(len(ds.close))
    last[1:] = np.diff(np.log(ds.close))
    h = max(1, int(getattr(ds, "horizon", 1)))
    if kind == "direction":
        pred = (last[idx] > 0).astype("float64") * 0.98 + 0.01
    elif kind == "volatility":
        pred = np.abs(last[idx])
    else:
        pred = last[idx] * h
    return {k: v for k, v in forecast_metrics(pred, ds.y[idx].astype("float64"), kind).items() if k != "n"}


def _write_forecasts(run_dir: Path, ds: Any, forecasts: np.ndarray, split_of: np.ndarray) -> None:
    """forecasts.csv: every bar from the first out-of-sample forecast on (NaN where there is no valid sample).

    Bars inside a split's span that have no forecast (a gap, a dropped window) keep the split's name, so the
    backtest trades them flat instead of silently skipping them.
    """
    oos = np.flatnonzero((split_of == "val") | (split_of == "test"))
    start = int(oos[0]) if len(oos) else 0
    split = split_of[start:].copy()
    for name in ("val", "test"):
        rows = np.flatnonzero(split == name)
        if len(rows):
            seg = split[rows[0]:rows[-1] + 1]
            seg[seg == ""] = name
    df = pd.DataFrame({"timestamp": ds.timestamps[start:], "close": ds.close[start:], "forecast": forecasts[start:],
                       "y": ds.y[start:], "outcome": ds.outcome[start:], "split": split})
    write_csv(run_dir / "forecasts.csv", df)


# ---------------------------------------------------------------- saved runs


def load_run_config(run_dir: Path) -> Config:
    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); pass the directory that "
                          "`cryptonorm train` printed")
    return build_config(read_yaml(p), source=str(p))


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").exists()




def predict(run_dir: Path, data_file: Path | None = None, out: Path | None = None) -> tuple[Path, int]:
    """Forecasts of a saved run on its own data (or another candle file), written as CSV."""
    from cryptonorm import dataset, training

    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    if data_file is not None:  # another file: all of it, not the run's date range
        data = {**cfg.to_dict()["data"], "file": str(data_file), "since": None, "until": None}
        cfg = build_config({**cfg.to_dict(), "data": data})
    meta_path = run_dir / "scaler.json"
    if not (run_dir / "model.pt").exists() or not meta_path.exists():
        raise DataError(f"{run_dir} has no model.pt/scaler.json; the training did not finish, train again")
    meta = json.loads(meta_path.read_text())
    model, _ = training.load_checkpoint(run_dir / "model.pt")
    device = training.resolve_device(cfg.train.device)
    model.to(device)
    ds = dataset.apply(dataset.prepare(load_candles(cfg), cfg), dataset.Scaler.from_dict(meta["scaler"]),
                       meta["features"])
    idx = ds.test_idx  # every bar with a complete, clean input window, the latest one included
    pred = np.full(len(ds.close), np.nan)
    if len(idx):
        pred[idx] = training.predict(model, ds, idx, device)
    df = pd.DataFrame({"timestamp": ds.timestamps, "close": ds.close, "forecast": pred})
    out = out or run_dir / "predictions.csv"
    write_csv(out, df)
    return out, int(len(idx))


def backtest(run_dir: Path, split: str = "test") -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/."""
    from cryptonorm import backtest as bt
    from cryptonorm import report

    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    fpath = run_dir / "forecasts.csv"  # with walk-forward, every out-of-sample fold forecast is "test"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    df = pd.read_csv(fpath)
    df = df[df["split"] == split]
    if len(df) < 2:
        raise DataError(f"the {split} split of {run_dir} has {len(df)} bar(s); a backtest needs at least 2: "
                        "use a longer data range or a larger split.test")
    result = bt.simulate(df["timestamp"].to_numpy("int64"), df["close"].to_numpy("float64"),
                         df["forecast"].to_numpy("float64"), cfg.backtest, cfg.data.timeframe, cfg.target.kind,
                         outcome=df["outcome"].to_numpy("float64"))
    out_dir = run_dir / "backtest"
    out_dir.mkdir(exist_ok=True)
    write_csv(out_dir / "equity.csv", result.equity)
    write_csv(out_dir / "trades.csv", result.trades)
    write_json(out_dir / "metrics.json", result.metrics)
    report.plot_equity(result, out_dir / "equity.png", title=f"{cfg.name}: {cfg.data.symbols[0]} "
                       f"{cfg.data.timeframe}, {split} split")
    return out_dir, result
