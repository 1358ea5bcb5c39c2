"""Plots (matplotlib, Agg canvas, no pyplot state) and rich tables of a backtest.

With cli.py, the only module that imports rich. matplotlib and rich are imported inside the functions
so that importing this module (and starting the CLI) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptonorm.atomic import atomic_path
from cryptonorm.text import fmt
from cryptonorm.trade.performance import drawdown_curve

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from rich.table import Table

# extra rows for backtest.mode vol_target (trade/vol_target.py)
VOL_TARGET_ROWS: list[tuple[str, str, str]] = [
    ("Realized vol / target", "vol_ratio", "num"),
    ("Risk tracking error (30-day windows)", "risk_tracking_error", "pct"),
    ("Mean position", "mean_position", "num"),
]
MAX_GAP_LINES = 200  # beyond this many outages, marking each one only clutters the plot

# (label, metric key, format) of the comparison table, in display order
TABLE_ROWS: list[tuple[str, str, str]] = [
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility (ann.)", "volatility", "pct"),
    ("Sharpe", "sharpe", "num"),
    ("Sortino", "sortino", "num"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Max DD duration (days)", "max_drawdown_days", "days"),
    ("Calmar", "calmar", "num"),
    ("Hit rate (bars in market)", "hit_rate", "pct"),
    ("Trades", "trades", "int"),
    ("Win rate (trades)", "win_rate", "pct"),
    ("Profit factor", "profit_factor", "num"),
    ("Exposure", "exposure", "pct"),
    ("Turnover (x / year)", "turnover", "num1"),
    ("Fees paid (x start equity)", "fees_paid", "pct"),
]


def atomic_savefig(fig: Figure, path: Path, **savefig_kwargs: Any) -> Path:
    """Save `fig` to a temp file in the destination folder, fsync, then rename over `path`.

    An interrupted run never leaves a truncated image. The format follows the suffix (png by default).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = savefig_kwargs.pop("format", None) or (path.suffix.lstrip(".").lower() or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)
    return path


def plot_equity(equity: pd.DataFrame, metrics: dict[str, Any], path: Path, title: str = "", *,
                log_scale: bool = False, dpi: int = 120) -> Path:
    """Equity of the strategy vs buy-and-hold (top; log scale optional) and their drawdowns (bottom), as a
    PNG written atomically. Bars that span an exchange outage are marked. Returns `path`.
    `equity`: a backtest's equity frame (timestamp, equity, bh_equity, gap); `metrics`: its metrics dict."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    eq = equity
    x = eq["timestamp"].to_numpy("int64").astype("datetime64[ms]")
    strat = eq["equity"].to_numpy("float64")
    bh = eq["bh_equity"].to_numpy("float64")

    fig = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(x, bh, color="0.55", lw=1.0, label="buy & hold")
    ax.plot(x, strat, color="C0", lw=1.2, label="strategy")
    ax.axhline(1.0, color="0.3", lw=0.6, ls=":")
    if log_scale:
        ax.set_yscale("log", nonpositive="mask")
    ax.set_ylabel("equity (start = 1)" + (", log scale" if log_scale else ""))
    ax.grid(alpha=0.3)

    ax_dd.fill_between(x, drawdown_curve(strat) * 100, 0.0, color="C3", alpha=0.35, lw=0, label="strategy")
    ax_dd.plot(x, drawdown_curve(bh) * 100, color="0.55", lw=0.8, label="buy & hold")
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)

    gap_x = x[eq["gap"].to_numpy(bool)] if "gap" in eq else x[:0]
    if 0 < len(gap_x) <= MAX_GAP_LINES:
        for i, g in enumerate(gap_x):
            for a in (ax, ax_dd):
                a.axvline(g, color="C1", lw=0.5, alpha=0.4, label="gap (outage)" if i == 0 and a is ax else None)
    ax.legend(loc="upper left", framealpha=0.85)

    locator = AutoDateLocator()
    ax_dd.xaxis.set_major_locator(locator)
    ax_dd.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    m = metrics
    sub = (f"Sharpe {fmt(m['strategy'].get('sharpe'), 'num')} vs buy & hold "
           f"{fmt(m['buy_and_hold'].get('sharpe'), 'num')}; fees {m['costs']['fee_bps']:g} + slippage "
           f"{m['costs']['slippage_bps']:g} bps per side; {m.get('gap_bars', 0)} bar(s) span gaps")
    fig.suptitle(f"{title}\n{sub}" if title else sub, fontsize=10)
    return atomic_savefig(fig, path, dpi=dpi)


def metric_columns(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(column name, metrics) of the comparison: strategy, before costs, buy-and-hold, flat, last sign; for
    backtest.mode vol_target: forecast-vol sizing, trailing-vol sizing, buy-and-hold (trade/vol_target.py)."""
    if metrics.get("mode") == "vol_target":
        return [("Strategy", metrics.get("strategy", {})),
                ("Trailing vol", metrics.get("baselines", {}).get("trailing_vol", {})),
                ("Buy & hold", metrics.get("buy_and_hold", {}))]
    columns = [("Strategy", metrics.get("strategy", {})),
               ("Before costs", metrics.get("strategy_before_costs", {})),
               ("Buy & hold", metrics.get("buy_and_hold", {}))]
    columns += [(name, metrics.get("baselines", {}).get(key, {}))
                for name, key in (("Flat", "flat"), ("Last sign", "last_sign"))]
    return columns


def metrics_caption(metrics: dict[str, Any]) -> str:
    """Bars, dates, costs and gaps of a backtest (and its forecast quality), under the metrics table."""
    costs = metrics.get("costs", {})
    caption = (f"{metrics.get('bars', '?')} bars {metrics.get('start', '')} -> {metrics.get('end', '')} "
               f"({metrics.get('timeframe', '?')}); fees {costs.get('fee_bps', float('nan')):g} + slippage "
               f"{costs.get('slippage_bps', float('nan')):g} bps per side; {metrics.get('gap_bars', 0)} bar(s) "
               "span gaps")
    ruin = metrics.get("ruin")
    if ruin:
        caption += (f"\nRUINED at bar {ruin.get('bar')} ({ruin.get('time')}): the strategy's equity was wiped out "
                    "there and stays at 0 (a return, drawdown and CAGR of -100%)")
    fc = metrics.get("forecast") or {}
    if metrics.get("mode") == "vol_target":
        caption += (f"\nvol target {fmt(metrics.get('target_vol'), 'pct')} (ann.), position = target / forecast vol "
                    f"capped at {fmt(metrics.get('max_leverage'), 'num')}; mean forecast vol "
                    f"{fmt(fc.get('mean_forecast_vol'), 'pct')}; trailing vol over {metrics.get('vol_lookback')} bars")
    elif fc:
        caption += (f"\nforecasts: directional accuracy {fmt(fc.get('directional_accuracy'), 'pct')}, "
                    f"IC {fmt(fc.get('ic_spearman'), 'num3')} (Spearman), n {fmt(fc.get('n'), 'int')}")
    return caption


def metrics_table(metrics: dict[str, Any]) -> Table:
    """Strategy vs buy-and-hold, flat and sign-of-last-return on the main metrics (a rich Table)."""
    from rich.table import Table

    columns = metric_columns(metrics)
    table = Table(title="Backtest", caption=metrics_caption(metrics), caption_justify="left")
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right", style="bold" if name == "Strategy" else None)
    rows = TABLE_ROWS + (VOL_TARGET_ROWS if metrics.get("mode") == "vol_target" else [])
    for label, key, kind in rows:
        table.add_row(label, *(fmt(col.get(key), kind) for _, col in columns))
    return table
