"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs.

`load_forecasts`, `simulate_forecasts` and `write_backtest` are shared with re-backtests of saved
forecasts under other settings (rebacktest.py), so both trade the same way (funding included).
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


def backtest(run_dir: Path, split: str = "test") -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/ (other settings: rebacktest.py)."""
    run_dir = Path(run_dir)
    cfg = finished_run(run_dir)
    result = simulate_forecasts(load_forecasts(run_dir, split), cfg)  # walk-forward: every fold's forecast is "test"
    out_dir = run_dir / BACKTEST_DIR
    write_backtest(out_dir, result, cfg, split)
    return out_dir, result


def load_forecasts(run_dir: Path, split: str) -> pd.DataFrame:
    """The saved out-of-sample forecasts of one split (rows of forecasts.csv), at least 2 bars."""
    fpath = Path(run_dir) / "forecasts.csv"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    df = pd.read_csv(fpath)
    df = df[df["split"] == split]
    if len(df) < 2:
        raise DataError(f"the {split} split of {run_dir} has {len(df)} bar(s); a backtest needs at least 2: "
                        f"use a longer data range or a larger split.{split}")
    return df


def simulate_forecasts(df: pd.DataFrame, cfg: Config, *, forecast_stats: bool = True) -> Any:
    """`trade.backtest.simulate` on rows of forecasts.csv with the config's backtest settings (and a swap's
    funding)."""
    from cryptonorm.trade import backtest as bt

    ts = df["timestamp"].to_numpy("int64")
    return bt.simulate(ts, df["close"].to_numpy("float64"), df["forecast"].to_numpy("float64"), cfg.backtest,
                       cfg.data.timeframe, cfg.target.kind, outcome=df["outcome"].to_numpy("float64"),
                       forecast_stats=forecast_stats, funding=_funding(cfg, ts))


def write_backtest(out_dir: Path, result: Any, cfg: Config, split: str) -> None:
    """equity.csv, trades.csv, metrics.json, equity.png and the backtest settings used (backtest.yaml)."""
    from cryptonorm.render import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "equity.csv", result.equity)
    write_csv(out_dir / "trades.csv", result.trades)
    write_json(out_dir / "metrics.json", result.metrics)
    write_text_atomic(out_dir / "backtest.yaml", yaml.safe_dump({"backtest": cfg.backtest.model_dump(mode="json")},
                                                                sort_keys=False, default_flow_style=None))
    plots.plot_equity(result, out_dir / "equity.png", title=f"{cfg.name}: {cfg.data.symbols[0]} "
                      f"{cfg.data.timeframe}, {split} split")
