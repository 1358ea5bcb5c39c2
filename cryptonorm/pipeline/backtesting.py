"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs.

`run_backtest`, `read_forecasts` and `simulate_split` are shared with re-backtests of saved forecasts under
other settings (rebacktest.py), so both trade the same way (funding, vol_target mode) and write the same files.

A backtest folder is built in a hidden temp folder and renamed into place when complete, so no command ever
sees a half-written backtest (a killed one leaves a `.backtest.*.tmp` folder that the next train clears).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cryptonorm.atomic import DIR_MODE, write_csv, write_json, write_text_atomic
from cryptonorm.config import Config
from cryptonorm.config.tabular import IMPORTANCE_FILE
from cryptonorm.data.store import load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.fetch import ProgressFn
from cryptonorm.pipeline.integrity import verify_run
from cryptonorm.pipeline.rundir import (
    BACKTEST_DIR,
    BACKTEST_FILES,
    BACKTEST_YAML,
    EQUITY_CSV,
    METRICS,
    TRADES_CSV,
    RunDir,
    drop_temp,
    new_run_dir,
    write_marker,
)
from cryptonorm.pipeline.training import TrainSummary, train
from cryptonorm.timeframes import timeframe_ms


def funding_of(cfg: Config, ts: np.ndarray) -> np.ndarray | None:
    """A swap's funding rate paid per unit of position in each bar (None for spot or backtest.funding off)."""
    if cfg.data.market != "swap" or cfg.backtest.funding == "off":
        return None
    from cryptonorm.trade.funding import funding_per_bar

    rates = load_funding(cfg, ts)
    assert rates is not None  # a swap always has funding (or load_funding raised)
    return funding_per_bar(ts, timeframe_ms(cfg.data.timeframe), rates["timestamp"].to_numpy(),
                           rates["rate"].to_numpy())


def backtest(run_dir: Path, split: str = "test", fmt: str | None = None, plot: bool = True) -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/ (equity.png and/or report.html per
    `fmt`: png | html | both; None: both when plotly is installed; neither with plot=False, which the claims
    study uses for its many small cells: drawing equity.png took most of such a cell's backtest time).
    Other backtest settings on the same forecasts: rebacktest.py."""
    rd = RunDir(run_dir)
    out_dir = rd / BACKTEST_DIR
    cfg = rd.finished_config()
    with rd.lock():
        return out_dir, run_backtest(rd.path, cfg, split, out_dir, fmt=fmt, plot=plot)


def run_backtest(run_dir: Path, cfg: Config, split: str, out_dir: Path, *, fmt: str | None = None,
                 plot: bool = True, kind: str = "backtest") -> Any:
    """Backtest RUN_DIR's saved `split` forecasts with `cfg`'s backtest settings into `out_dir`: equity.csv,
    trades.csv, metrics.json, backtest.yaml (the settings used) and the reports, all or nothing (a temp folder
    renamed into place; files of the user's in the old folder are kept, our outputs of an earlier backtest
    are not: no report.html left beside a new equity.png); returns the Backtest. The run's files must match
    the SHA-256 recorded in run.json. `kind`: what the folder's marker says made it (backtest, rebacktest)."""
    from cryptonorm.pipeline.reports import write_backtest_reports, write_no_backtest_report
    from cryptonorm.render.html import formats

    verify_run(run_dir)  # the model too: a run whose files do not belong together is refused
    want = formats(fmt) if plot else ()
    title = f"{cfg.name}: {cfg.data.symbols[0]} {cfg.data.timeframe}, {split} split"
    full = read_forecasts(run_dir)  # with walk-forward, every out-of-sample fold forecast is "test"
    n = int((full["split"] == split).sum())
    if n < 2:
        why = _too_short(run_dir, split, n)
        page = write_no_backtest_report(out_dir, title, why, want)
        raise DataError(why + (f" (see {page})" if page else ""))
    result, outcome = simulate_split(full, cfg, split)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _folder_swap(out_dir) as tmp:  # the callers have checked that `out_dir` is new, empty or ours
        write_csv(tmp / EQUITY_CSV, result.equity)
        write_csv(tmp / TRADES_CSV, result.trades)
        write_json(tmp / METRICS, result.metrics)
        write_text_atomic(tmp / BACKTEST_YAML, yaml.safe_dump({"backtest": cfg.backtest.model_dump(mode="json")},
                                                               sort_keys=False, default_flow_style=None))
        write_backtest_reports(tmp, result, title, want, outcome=outcome, importance=_importance(run_dir, want))
        write_marker(tmp, kind, run_dir)
    return result


def _importance(run_dir: Path, want: tuple[str, ...]) -> pd.DataFrame | None:
    """A ridge / LightGBM run's importance.csv for report.html; None for a network (or no HTML)."""
    path = Path(run_dir) / IMPORTANCE_FILE
    return pd.read_csv(path) if "html" in want and path.is_file() else None


def read_forecasts(run_dir: Path) -> pd.DataFrame:
    """RUN_DIR/forecasts.csv: every saved out-of-sample forecast, all splits (RunDir.forecasts)."""
    return RunDir(run_dir).forecasts()


def _too_short(run_dir: Path, split: str, n: int) -> str:
    return (f"the {split} split of {run_dir} has {n} bar(s); a backtest needs at least 2: "
            f"use a longer data range or a larger split.{split}")


def simulate_split(full: pd.DataFrame, cfg: Config, split: str, *, forecast_stats: bool = True,
                   run_dir: Path | None = None) -> tuple[Any, np.ndarray]:
    """The backtest of one split of forecasts.csv (`full`) with `cfg`'s settings (and a swap's funding), and
    the realized outcome of each of its bars. A split of fewer than 2 bars is a DataError."""
    df = full[full["split"] == split]
    if len(df) < 2:
        raise DataError(_too_short(run_dir or Path("the run"), split, len(df)))
    ts = df["timestamp"].to_numpy("int64")
    if cfg.backtest_mode == "vol_target":  # a volatility forecast: pipeline/vol.py, trade/vol_target.py
        from cryptonorm.pipeline.vol import backtest_frame

        result, outcome = backtest_frame(full, cfg, split, funding=funding_of(cfg, ts))
        return result, outcome
    from cryptonorm.trade import backtest as bt

    outcome = df["outcome"].to_numpy("float64")
    return bt.simulate(ts, df["close"].to_numpy("float64"), df["forecast"].to_numpy("float64"), cfg.backtest,
                       cfg.data.timeframe, cfg.target.kind, outcome=outcome, forecast_stats=forecast_stats,
                       funding=funding_of(cfg, ts)), outcome


@contextlib.contextmanager
def _folder_swap(target: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside `target`; when the block succeeds it replaces `target` by renames.
    What the old folder holds beyond our outputs (a user's notes.md) moves into the new one."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        old = target.with_name(f".{target.name}.old.{os.getpid()}.tmp")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        # the user's files move from the old folder to the new one; the old one goes only once empty of
        # them (killed half-way, it stays, hidden: temp-folder cleanups remove only our files, drop_temp)
        for p in old.iterdir() if old.is_dir() else ():
            if p.name not in BACKTEST_FILES and not (target / p.name).exists():
                p.rename(target / p.name)
        drop_temp(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_and_backtest(cfg: Config, out: Path | None = None, *, force: bool = False,
                       progress: ProgressFn | None = None, fmt: str | None = None) -> tuple[TrainSummary, Path, Any]:
    """`cryptonorm run`: train, then backtest the test split, with the run directory locked throughout."""
    rd = RunDir(Path(out) if out is not None else new_run_dir(cfg))
    rd.check_out(force)
    with rd.lock():
        summary = train(cfg, rd.path, force=force, progress=progress)
        out_dir, result = backtest(summary.run_dir, fmt=fmt)
    return summary, out_dir, result
