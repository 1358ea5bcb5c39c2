"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs.

`run_backtest`, `read_forecasts` and `simulate_split` are shared with re-backtests of saved forecasts under
other settings (rebacktest.py), so both trade the same way (funding, vol_target mode) and write the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cryptonorm.atomic import write_csv, write_json, write_text_atomic
from cryptonorm.config import Config
from cryptonorm.data.store import load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.rundir import finished_run
from cryptonorm.timeframes import timeframe_ms

BACKTEST_DIR = "backtest"  # the run's own backtest, written by `cryptonorm run` / `backtest RUN_DIR`


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
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/ (equity.png and/or report.html per
    `fmt`: png | html | both; None: both when plotly is installed; neither with plot=False, which the claims
    study uses for its many small cells: drawing equity.png took most of such a cell's backtest time).
    Other backtest settings on the same forecasts: rebacktest.py."""
    run_dir = Path(run_dir)
    out_dir = run_dir / BACKTEST_DIR
    return out_dir, run_backtest(run_dir, finished_run(run_dir), split, out_dir, fmt=fmt, plot=plot)


def run_backtest(run_dir: Path, cfg: Config, split: str, out_dir: Path, *, fmt: str | None = None,
                 plot: bool = True) -> Any:
    """Backtest RUN_DIR's saved `split` forecasts with `cfg`'s backtest settings into `out_dir`: equity.csv,
    trades.csv, metrics.json, backtest.yaml (the settings used) and the reports; returns the Backtest."""
    from cryptonorm.pipeline.reports import write_backtest_reports, write_no_backtest_report
    from cryptonorm.render.html import formats

    want = formats(fmt) if plot else ()
    title = f"{cfg.name}: {cfg.data.symbols[0]} {cfg.data.timeframe}, {split} split"
    full = read_forecasts(run_dir)  # with walk-forward, every out-of-sample fold forecast is "test"
    n = int((full["split"] == split).sum())
    if n < 2:
        why = _too_short(run_dir, split, n)
        page = write_no_backtest_report(out_dir, title, why, want)
        raise DataError(why + (f" (see {page})" if page else ""))
    result, outcome = simulate_split(full, cfg, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "equity.csv", result.equity)
    write_csv(out_dir / "trades.csv", result.trades)
    write_json(out_dir / "metrics.json", result.metrics)
    write_text_atomic(out_dir / "backtest.yaml", yaml.safe_dump({"backtest": cfg.backtest.model_dump(mode="json")},
                                                                sort_keys=False, default_flow_style=None))
    write_backtest_reports(out_dir, result, title, want, outcome=outcome)
    return result


def read_forecasts(run_dir: Path) -> pd.DataFrame:
    """RUN_DIR/forecasts.csv: every saved out-of-sample forecast, all splits."""
    fpath = Path(run_dir) / "forecasts.csv"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    return pd.read_csv(fpath)


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
    if cfg.backtest_mode == "vol_target":  # a volatility forecast: pipeline/vol.py, trade/vol_target.py
        from cryptonorm.pipeline.vol import backtest_frame

        result, outcome = backtest_frame(full, cfg, split)
        return result, outcome
    from cryptonorm.trade import backtest as bt

    ts = df["timestamp"].to_numpy("int64")
    outcome = df["outcome"].to_numpy("float64")
    return bt.simulate(ts, df["close"].to_numpy("float64"), df["forecast"].to_numpy("float64"), cfg.backtest,
                       cfg.data.timeframe, cfg.target.kind, outcome=outcome, forecast_stats=forecast_stats,
                       funding=_funding(cfg, ts)), outcome
