"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs.

RUN_DIR/backtest/ is built in a hidden temp folder and renamed into place when complete, so no command
ever sees a half-written backtest (a killed one leaves a `.backtest.*.tmp` folder that the next train clears).
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

from cryptonorm.atomic import DIR_MODE, write_csv, write_json
from cryptonorm.config import Config
from cryptonorm.data.store import load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.fetch import ProgressFn
from cryptonorm.pipeline.integrity import verify_run
from cryptonorm.pipeline.rundir import check_run_dir, finished_run, new_run_dir, run_dir_lock
from cryptonorm.pipeline.training import TrainSummary, train
from cryptonorm.timeframes import timeframe_ms


def _funding(cfg: Config, ts: np.ndarray) -> np.ndarray | None:
    """A swap's funding rate paid per unit of position in each bar (None for spot or backtest.funding off)."""
    if cfg.data.market != "swap" or cfg.backtest.funding == "off":
        return None
    from cryptonorm.trade.funding import funding_per_bar

    rates = load_funding(cfg)
    assert rates is not None  # a swap always has funding (or load_funding raised)
    return funding_per_bar(ts, timeframe_ms(cfg.data.timeframe), rates["timestamp"].to_numpy(),
                           rates["rate"].to_numpy())


def backtest(run_dir: Path, split: str = "test", fmt: str | None = None, plot: bool = True) -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/, all of it or nothing (equity.png
    and/or report.html per `fmt`: png | html | both; None: both when plotly is installed; neither with
    plot=False, which the claims study uses for its many small cells: drawing equity.png took most of such a
    cell's backtest time). The run's files must match the SHA-256 recorded in run.json."""
    from cryptonorm.pipeline.reports import write_backtest_reports, write_no_backtest_report
    from cryptonorm.render.html import formats

    run_dir = Path(run_dir)
    want = formats(fmt) if plot else ()
    cfg = finished_run(run_dir)
    fpath = run_dir / "forecasts.csv"  # with walk-forward, every out-of-sample fold forecast is "test"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    with run_dir_lock(run_dir):
        verify_run(run_dir)  # the model too: a run whose files do not belong together is refused
        full = pd.read_csv(fpath)
        df = full[full["split"] == split]
        out_dir = run_dir / "backtest"
        title = f"{cfg.name}: {cfg.data.symbols[0]} {cfg.data.timeframe}, {split} split"
        if len(df) < 2:
            why = (f"the {split} split of {run_dir} has {len(df)} bar(s); a backtest needs at least 2: "
                   "use a longer data range or a larger split.test")
            page = write_no_backtest_report(out_dir, title, why, want)
            raise DataError(why + (f" (see {page})" if page else ""))
        result, outcome = _simulate(full, df, cfg, split)
        with _folder_swap(out_dir) as tmp:
            write_csv(tmp / "equity.csv", result.equity)
            write_csv(tmp / "trades.csv", result.trades)
            write_json(tmp / "metrics.json", result.metrics)
            write_backtest_reports(tmp, result, title, want, outcome=outcome)
    return out_dir, result


def _simulate(full: pd.DataFrame, df: pd.DataFrame, cfg: Config, split: str) -> tuple[Any, np.ndarray]:
    """(Backtest, realized outcome per bar) of the split's rows `df` of forecasts.csv (`full`)."""
    from cryptonorm.trade import backtest as bt

    ts = df["timestamp"].to_numpy("int64")
    if cfg.backtest_mode == "vol_target":  # a volatility forecast: pipeline/vol.py, trade/vol_target.py
        from cryptonorm.pipeline.vol import backtest_frame

        result, outcome = backtest_frame(full, cfg, split)
        return result, outcome
    outcome = df["outcome"].to_numpy("float64")
    result = bt.simulate(ts, df["close"].to_numpy("float64"), df["forecast"].to_numpy("float64"), cfg.backtest,
                         cfg.data.timeframe, cfg.target.kind, outcome=outcome, funding=_funding(cfg, ts))
    return result, outcome


@contextlib.contextmanager
def _folder_swap(target: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside `target`; when the block succeeds it replaces `target` by renames."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        old = target.with_name(f".{target.name}.old.{os.getpid()}.tmp")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_and_backtest(cfg: Config, out: Path | None = None, *, force: bool = False,
                       progress: ProgressFn | None = None, fmt: str | None = None) -> tuple[TrainSummary, Path, Any]:
    """`cryptonorm run`: train, then backtest the test split, with the run directory locked throughout."""
    run_dir = Path(out) if out is not None else new_run_dir(cfg)
    check_run_dir(run_dir)
    with run_dir_lock(run_dir):
        summary = train(cfg, run_dir, force=force, progress=progress)
        out_dir, result = backtest(summary.run_dir, fmt=fmt)
    return summary, out_dir, result
