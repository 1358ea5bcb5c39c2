"""RUN_DIR/backtest/report.html: one interactive page per backtest (plotly), from plain frames and dicts.

One figure of five rows on linked x-axes (zoom one, zoom all), hover values with UTC date and time:
  1. close price, shaded where the strategy is long (green) or short (red), flat unshaded; trade entries
     (triangles) and exits (crosses);
  2. equity of the strategy after costs, before costs, and buy-and-hold (start = 1);
  3. drawdown of the strategy and of buy-and-hold;
  4. rolling Sharpe of the strategy (annualized, over ROLLING_DAYS days of bars);
  5. the forecast against the realized outcome it forecast;
then the metrics and per-year tables. Long series are downsampled for DISPLAY only (min/max per bucket,
see cryptonorm.render.html); the curves are computed on every bar first, the tables come from the metrics.

Timing as in cryptonorm.trade.backtest: row t holds the position held over bar t; x is the candle's open
time; the before-costs curve is prod(1 + position[t] * (close[t] / close[t-1] - 1)), the same positions
with zero costs (it ends at 1 + metrics["strategy_before_costs"]["total_return"]).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cryptonorm.render.html import (
    DISPLAY_BUCKETS,
    Chart,
    bucket_any,
    esc,
    hover_time,
    layout_defaults,
    message,
    minmax_indices,
    table,
    utc,
    write_page,
)
from cryptonorm.render.plots import TABLE_ROWS, metric_columns, metrics_caption
from cryptonorm.text import fmt
from cryptonorm.timeframes import bars_per_year, timeframe_ms
from cryptonorm.trade.performance import drawdown_curve

if TYPE_CHECKING:
    import plotly.graph_objects as go

ROLLING_DAYS = 90  # window of the rolling Sharpe, in calendar days of bars
MAX_TRADE_MARKERS = 1000  # beyond this, only the trades with the largest |return| are marked (said in the title)
ROW_TITLES = ("price, position shading and trades", "equity (start = 1)", "drawdown", "rolling Sharpe",
              "forecast vs realized outcome")


def backtest_page(out: Path, equity: pd.DataFrame | None, trades: pd.DataFrame | None, metrics: dict[str, Any],
                  *, title: str, outcome: np.ndarray | None = None, reason: str = "",
                  buckets: int = DISPLAY_BUCKETS, importance: pd.DataFrame | None = None) -> Path:
    """Write the backtest page to `out` (plotly.min.js beside it); returns `out`.

    equity: the Backtest.equity frame (EQUITY_COLUMNS); trades: Backtest.trades; metrics: Backtest.metrics.
    outcome (N,): the realized outcome of each row's forecast (default: the next bar's log return).
    With no equity (or fewer than 2 bars) the page says there is no backtest, and why (`reason`).
    importance: a tabular model's importance.csv (feature, lag, importance, ...): its top rows, charted.
    """
    if equity is None or len(equity) < 2:
        why = reason or "the run has no backtest"
        return write_page(out, title, [f"<h1>{esc(title)}</h1>",
                                       message(f"No backtest to show: {why}.")])
    chart = Chart("backtest", backtest_figure(equity, trades, metrics, outcome=outcome, buckets=buckets))
    body: list[str | Chart] = [f"<h1>{esc(title)}</h1>", f'<p class="info">{esc(metrics_caption(metrics))}</p>',
                               chart, "<h2>Metrics</h2>", metrics_html(metrics), per_year_html(metrics)]
    if importance is not None and len(importance):
        body += importance_parts(importance)
    return write_page(out, title, body)


IMPORTANCE_TOP = 20  # design columns shown


def importance_parts(imp: pd.DataFrame) -> list[str | Chart]:
    """The top IMPORTANCE_TOP columns of a ridge / LightGBM model: a bar chart and a table."""
    import plotly.graph_objects as go

    top = imp.sort_values("importance", ascending=False).head(IMPORTANCE_TOP)
    labels = [f"{f} (lag {int(lag)})" for f, lag in zip(top["feature"], top["lag"], strict=True)]
    fig = go.Figure(go.Bar(x=top["importance"][::-1], y=labels[::-1], orientation="h", name="importance"))
    layout_defaults(fig, "share of the model's total importance", 60 + 22 * len(top))
    extra = [c for c in ("gain", "split", "coef") if c in top.columns]
    rows = [[lab, fmt(share, "pct"), *(fmt(r[c], "g4") for c in extra)]
            for lab, share, (_, r) in zip(labels, top["importance"], top.iterrows(), strict=True)]
    caption = ("LightGBM: share of the total split gain" if "gain" in extra else
               "ridge: share of the summed |coefficient| on the scaled inputs")
    return ["<h2>Feature importance</h2>", Chart("importance", fig),
            table(["column", "importance", *extra], rows, caption=caption, cls="importance")]


def metrics_html(metrics: dict[str, Any]) -> str:
    """The comparison table (strategy, before costs, buy-and-hold, baselines) as HTML."""
    columns = metric_columns(metrics)
    rows = [[label, *(fmt(col.get(key), kind) for _, col in columns)] for label, key, kind in TABLE_ROWS]
    return table(["metric", *(name for name, _ in columns)], rows, cls="metrics")


def per_year_html(metrics: dict[str, Any]) -> str:
    rows = [[str(r.get("year")), fmt(r.get("return"), "pct"), fmt(r.get("bh_return"), "pct"),
             fmt(r.get("sharpe"), "num"), fmt(r.get("max_drawdown"), "pct"),
             fmt(r.get("bars"), "int")] for r in metrics.get("per_year", [])]
    if not rows:
        return ""
    return table(["year", "return", "buy & hold", "Sharpe", "max drawdown", "bars"], rows, caption="Per year",
                 cls="per-year")


def before_costs_equity(close: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(N,) equity of the same positions with zero costs (row 0 = 1: nothing is held before bar 0)."""
    bar_ret = np.zeros(len(close))
    bar_ret[1:] = close[1:] / close[:-1] - 1.0
    return np.cumprod(1.0 + position * bar_ret)


def rolling_sharpe(returns: np.ndarray, window: int, timeframe: str) -> np.ndarray:
    """(N,) annualized mean/std of the last `window` bar returns (ddof=1); NaN before, or with no spread."""
    r = pd.Series(returns)
    mean, std = r.rolling(window).mean(), r.rolling(window).std(ddof=1)
    out = (mean / std.where(std > 1e-15)) * math.sqrt(bars_per_year(timeframe))
    return out.to_numpy("float64")


def sharpe_window(n_periods: int, timeframe: str) -> int:
    """ROLLING_DAYS of bars, shortened to a third of the series when it is shorter (at least 5 bars)."""
    w = max(2, round(ROLLING_DAYS * 86_400_000 / timeframe_ms(timeframe)))
    return w if w <= n_periods // 3 else max(5, n_periods // 3)


def backtest_figure(equity: pd.DataFrame, trades: pd.DataFrame | None, metrics: dict[str, Any], *,
                    outcome: np.ndarray | None = None, buckets: int = DISPLAY_BUCKETS) -> go.Figure:
    """The five linked rows (see the module docstring) as one plotly figure."""
    from plotly.subplots import make_subplots

    kind = str(metrics.get("kind", "return"))
    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.035, subplot_titles=ROW_TITLES,
                        row_heights=[0.3, 0.22, 0.14, 0.14, 0.2],
                        specs=[[{"secondary_y": True}], [{}], [{}], [{}], [{"secondary_y": kind != "return"}]])
    ts = equity["timestamp"].to_numpy("int64")
    x = utc(ts)
    close = equity["close"].to_numpy("float64")
    pos = equity["position"].to_numpy("float64")
    drawn = _Drawer(fig, x, buckets)
    drawn.line(close, "close", 1, color="#444", fmt="%{y:,.2f}")
    for name, flag, color in (("long", pos > 0, "rgba(26,127,55,0.18)"), ("short", pos < 0, "rgba(180,35,24,0.18)")):
        idx, on = bucket_any(flag, buckets)
        fig.add_scatter(x=x[idx], y=on.astype("int8"), name=f"{name} (shaded)", mode="lines", line_shape="hv",
                        line={"width": 0}, fill="tozeroy", fillcolor=color, hoverinfo="skip", row=1, col=1,
                        secondary_y=True)
    fig.update_yaxes(range=[0, 1], visible=False, secondary_y=True, row=1, col=1)
    shown = _trade_markers(fig, trades)

    eq = equity["equity"].to_numpy("float64")
    bh = equity["bh_equity"].to_numpy("float64")
    drawn.line(eq, "strategy", 2, color="#1f77b4", fmt="%{y:.4f}")
    drawn.line(before_costs_equity(close, pos), "before costs", 2, color="#9ecae1", fmt="%{y:.4f}", dash="dot")
    drawn.line(bh, "buy & hold", 2, color="#888", fmt="%{y:.4f}")
    drawn.line(drawdown_curve(eq) * 100, "strategy drawdown %", 3, color="#d62728", fmt="%{y:.2f}%", fill=True)
    drawn.line(drawdown_curve(bh) * 100, "buy & hold drawdown %", 3, color="#888", fmt="%{y:.2f}%")

    tf = str(metrics.get("timeframe", "1h"))
    ret = equity["strategy_return"].to_numpy("float64").copy()
    ret[0] = np.nan  # row 0 is the start, not a bar held
    window = sharpe_window(len(ts) - 1, tf)
    drawn.line(rolling_sharpe(ret, window, tf), f"rolling Sharpe ({window} bars)", 4, color="#2ca02c",
               fmt="%{y:.2f}")

    fc = equity["forecast"].to_numpy("float64")
    real = _realized(close, outcome)
    drawn.line(fc, "forecast" + (" P(up)" if kind == "direction" else ""), 5, color="#ff7f0e", fmt="%{y:.4g}")
    drawn.line(real, "realized log return", 5, color="#7f7f7f", fmt="%{y:.4g}", secondary=kind != "return")

    n = len(ts)
    note = f"; display: min/max of {buckets} buckets of {n:,} bars" if n > 2 * buckets else ""
    note += f"; {shown} marked" if shown else ""
    layout_defaults(fig, f"{n:,} bars {metrics.get('start', '')} -> {metrics.get('end', '')} UTC{note}", 1250)
    fig.update_layout(hovermode="x")
    fig.update_xaxes(showspikes=True, spikemode="across", spikethickness=1)
    fig.update_xaxes(title_text="candle open time (UTC)", row=5, col=1)
    if not np.isfinite(rolling_sharpe(ret, window, tf)).any():
        fig.add_annotation(text="too few bars (or no position) for a rolling Sharpe", showarrow=False,
                           xref="x domain", yref="y domain", x=0.5, y=0.5, row=4, col=1)
    return fig


def _realized(close: np.ndarray, outcome: np.ndarray | None) -> np.ndarray:
    """The realized outcome of each row's forecast: `outcome` if given, else log(close[t+1] / close[t])."""
    if outcome is not None:
        return np.asarray(outcome, dtype="float64")
    real = np.full(len(close), np.nan)
    real[:-1] = np.log(close[1:] / close[:-1])
    return real


class _Drawer:
    """Adds time-series lines to the figure, each downsampled for display on its own (min/max per bucket)."""

    def __init__(self, fig: go.Figure, x: np.ndarray, buckets: int) -> None:
        self.fig, self.x, self.buckets = fig, x, buckets

    def line(self, y: np.ndarray, name: str, row: int, *, color: str, fmt: str, dash: str | None = None,
             fill: bool = False, secondary: bool = False) -> None:
        idx = minmax_indices(y, self.buckets)
        kw: dict[str, Any] = {"secondary_y": True} if secondary else {}
        self.fig.add_scatter(x=self.x[idx], y=y[idx], name=name, mode="lines",
                             line={"color": color, "width": 1.2, **({"dash": dash} if dash else {})},
                             fill="tozeroy" if fill else None, hovertemplate=hover_time(name, fmt),
                             row=row, col=1, **kw)


def _trade_markers(fig: go.Figure, trades: pd.DataFrame | None) -> str:
    """Long entries, short entries and exits on the price row (three traces, possibly empty).

    Returns a note when only the MAX_TRADE_MARKERS trades with the largest |return| are marked."""
    tr = trades if trades is not None else pd.DataFrame(columns=["entry_time", "exit_time", "side", "entry_price",
                                                                 "exit_price", "return", "bars_held", "closed"])
    note = ""
    if len(tr) > MAX_TRADE_MARKERS:
        note = f"the {MAX_TRADE_MARKERS:,} trades of largest |return| of {len(tr):,}"
        tr = tr.loc[tr["return"].abs().sort_values(ascending=False).index[:MAX_TRADE_MARKERS]]
    text = [f"{s} trade, {fmt(r, 'pct')} after costs, {int(b)} bar(s){'' if c else ', still open'}"
            for s, r, b, c in zip(tr["side"].astype(str), tr["return"], tr["bars_held"], tr["closed"], strict=True)]
    tr = tr.assign(_text=text)
    for side, symbol, color in (("long", "triangle-up", "#1a7f37"), ("short", "triangle-down", "#b42318")):
        sel = tr[tr["side"].astype(str) == side]
        fig.add_scatter(x=utc(sel["entry_time"].to_numpy("int64")), y=sel["entry_price"].to_numpy("float64"),
                        mode="markers", name=f"{side} entry", marker={"symbol": symbol, "size": 9, "color": color},
                        text=sel["_text"].to_numpy(object), hovertemplate=hover_time("entry at %{y:,.2f}", "%{text}"),
                        row=1, col=1)
    fig.add_scatter(x=utc(tr["exit_time"].to_numpy("int64")), y=tr["exit_price"].to_numpy("float64"),
                    mode="markers", name="exit", marker={"symbol": "x-thin", "size": 8, "line": {"width": 1.5},
                                                         "color": "#333"},
                    text=tr["_text"].to_numpy(object), hovertemplate=hover_time("exit at %{y:,.2f}", "%{text}"),
                    row=1, col=1)
    return note
