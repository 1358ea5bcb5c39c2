"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv, write_json
from cryptonorm.config import Config
from cryptonorm.data.store import load_funding
from cryptonorm.errors import DataError
from cryptonorm.pipeline.rundir import finished_run
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
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/ (equity.png and/or report.html per
    `fmt`: png | html | both; None: both when plotly is installed; neither with plot=False, which the claims
    study uses for its many small cells: drawing equity.png took most of such a cell's backtest time)."""
    from cryptonorm.pipeline.reports import write_backtest_reports, write_no_backtest_report
    from cryptonorm.render.html import formats
    from cryptonorm.trade import backtest as bt

    run_dir = Path(run_dir)
    want = formats(fmt) if plot else ()
    cfg = finished_run(run_dir)
    fpath = run_dir / "forecasts.csv"  # with walk-forward, every out-of-sample fold forecast is "test"
    if not fpath.exists():
        raise DataError(f"{fpath} not found; train first (`cryptonorm train CONFIG`)")
    full = pd.read_csv(fpath)
    df = full[full["split"] == split]
    out_dir = run_dir / "backtest"
    title = f"{cfg.name}: {cfg.data.symbols[0]} {cfg.data.timeframe}, {split} split"
    if len(df) < 2:
        why = (f"the {split} split of {run_dir} has {len(df)} bar(s); a backtest needs at least 2: "
               "use a longer data range or a larger split.test")
        page = write_no_backtest_report(out_dir, title, why, want)
        raise DataError(why + (f" (see {page})" if page else ""))
    ts = df["timestamp"].to_numpy("int64")
    if cfg.backtest_mode == "vol_target":  # a volatility forecast: pipeline/vol.py, trade/vol_target.py
        from cryptonorm.pipeline.vol import backtest_frame

        result, outcome = backtest_frame(full, cfg, split)
    else:
        outcome = df["outcome"].to_numpy("float64")
        result = bt.simulate(ts, df["close"].to_numpy("float64"),
                             df["forecast"].to_numpy("float64"), cfg.backtest, cfg.data.timeframe, cfg.target.kind,
                             outcome=outcome, funding=_funding(cfg, ts))
    out_dir.mkdir(exist_ok=True)
    write_csv(out_dir / "equity.csv", result.equity)
    write_csv(out_dir / "trades.csv", result.trades)
    write_json(out_dir / "metrics.json", result.metrics)
    write_backtest_reports(out_dir, result, title, want, outcome=outcome)
    return out_dir, result
