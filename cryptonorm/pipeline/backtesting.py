"""The backtest step: a run's out-of-sample forecasts turned into positions and returns after costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cryptonorm.atomic import write_csv, write_json
from cryptonorm.errors import DataError
from cryptonorm.pipeline.rundir import finished_run


def backtest(run_dir: Path, split: str = "test") -> tuple[Path, Any]:
    """Backtest a run's out-of-sample forecasts; writes RUN_DIR/backtest/."""
    from cryptonorm.render import plots as report
    from cryptonorm.trade import backtest as bt

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
