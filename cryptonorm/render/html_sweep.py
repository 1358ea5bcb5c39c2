"""SWEEP_DIR/report.html: the sweep's tables and interactive plots (plotly), from plain frames and dicts.

The page builder knows nothing of sweep files or study objects: cryptonorm.sweeps hands it a `SweepPage`.
  - the tables as given (the summary with raw and corrected p-values where the study computed them, the
    paired tests), the notes, and every cell (status, grid values, run directory) in a folded table;
  - per metric (the test loss, the Sharpe) a box per group (the norm) with every seed as a point; hover:
    cell id, its grid values (how its config differs from the base) and its run directory; one panel per
    model kind;
  - training curves: each cell's validation loss per epoch (thin) and the mean over the group's cells (bold);
  - the test loss against the batch size: mean over seeds with a 95% confidence band (Student-t,
    mean +/- t(0.975, n-1) x std / sqrt(n); no band with a single seed).
A sweep whose cells all failed (or are pending) gets a notice and the failures instead of empty charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryptonorm.render.html import Chart, esc, layout_defaults, message, table, write_page
from cryptonorm.text import fmt

if TYPE_CHECKING:
    import plotly.graph_objects as go

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")


@dataclass(frozen=True)
class TableData:
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class SweepPage:
    """Everything the sweep page shows, as plain data.

    cells: one row per cell with columns cell_id, status ('ok' | 'failed' | 'pending'), run_dir, error, the
        grid keys (values as shown strings) and the metric columns (floats).
    group_key: what the boxes and lines are grouped by (e.g. 'model.norm'); None: one group 'all'.
    panel_key: one panel per value (e.g. 'model.kind'); None: one panel.
    metrics: (column, label) of each box plot.
    curves: cell_id -> that cell's history (columns epoch, val_loss).
    batch_key: the batch-size grid key, when the sweep has one; loss: the column the batch-size plot shows.
    """

    title: str
    info: list[str]
    tables: list[TableData]
    cells: pd.DataFrame
    grid_keys: list[str]
    group_key: str | None
    panel_key: str | None
    metrics: list[tuple[str, str]]
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    batch_key: str | None = None
    loss: str = "test_mse"
    notes: list[str] = field(default_factory=list)


def sweep_page(out: Path, data: SweepPage, js_dir: Path | None = None) -> Path:
    """Write SWEEP_DIR/report.html (plotly.min.js beside it, or in `js_dir` above it); returns `out`."""
    ok = data.cells[data.cells["status"] == "ok"] if len(data.cells) else data.cells
    body: list[str | Chart] = [f"<h1>{esc(data.title)}</h1>"]
    body += [f'<p class="info">{esc(line)}</p>' for line in data.info]
    if not len(ok):
        body.append(message(_nothing_ok(data.cells)))
    for t in data.tables:
        body += [f"<h2>{esc(t.caption)}</h2>", table(t.header, t.rows)]
    if data.notes:
        body += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in data.notes) + "</ul>"]
    if len(ok):
        for i, (col, label) in enumerate(data.metrics):
            body += [f"<h2>{esc(label)} by {esc(data.group_key or 'cell')}</h2>", _box_or_notice(data, ok, col,
                                                                                               label, i)]
        body += ["<h2>Training curves</h2>", _curves_or_notice(data, ok)]
        if data.batch_key is not None:
            body += [f"<h2>{esc(data.loss)} vs {esc(data.batch_key)}</h2>", _batch_or_notice(data, ok)]
    body += _failed_section(data.cells)
    body.append(_cells_section(data))
    return write_page(out, data.title, body, js_dir)


def _nothing_ok(cells: pd.DataFrame) -> str:
    n = len(cells)
    failed = int((cells["status"] == "failed").sum()) if n else 0
    pending = int((cells["status"] == "pending").sum()) if n else 0
    return (f"No finished cell to plot: {n} cell(s), {failed} failed, {pending} pending. The failures are "
            "listed below; run the same `cryptonorm sweep` again to retry them.")


# ---------------------------------------------------------------- plots


def _groups(data: SweepPage, cells: pd.DataFrame) -> list[str]:
    if data.group_key is None:
        return ["all"]
    return list(dict.fromkeys(cells[data.group_key].astype(str)))


def _panels(data: SweepPage, cells: pd.DataFrame) -> list[str | None]:
    if data.panel_key is None:
        return [None]
    return list(dict.fromkeys(cells[data.panel_key].astype(str)))


def _select(data: SweepPage, cells: pd.DataFrame, panel: str | None, group: str) -> pd.DataFrame:
    sel = cells if panel is None else cells[cells[data.panel_key].astype(str) == panel]
    return sel if data.group_key is None else sel[sel[data.group_key].astype(str) == group]


def _figure(data: SweepPage, panels: Sequence[str | None], title: str) -> go.Figure:
    from plotly.subplots import make_subplots

    names = [f"{data.panel_key}={p}" if p is not None else "" for p in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=names, shared_yaxes=False)
    return layout_defaults(fig, title, 460)


def hover_text(row: pd.Series, grid_keys: Sequence[str]) -> str:
    """cell id, grid values and run directory of one cell, for a hover label."""
    params = "<br>".join(f"{esc(k)} = {esc(row.get(k))}" for k in grid_keys)
    return f"cell {esc(row.get('cell_id'))}<br>{params}<br>run: {esc(row.get('run_dir'))}"


def _box_or_notice(data: SweepPage, ok: pd.DataFrame, col: str, label: str, i: int) -> str | Chart:
    vals = pd.to_numeric(ok[col], errors="coerce") if col in ok.columns else pd.Series(dtype="float64")
    if not vals.notna().any():
        return message(f"No finished cell has a {label} ({col}) to plot.")
    panels = _panels(data, ok)
    fig = _figure(data, panels, f"{label}: every seed is a point (hover for the cell)")
    for c, panel in enumerate(panels, start=1):
        for g, group in enumerate(_groups(data, ok)):
            sel = _select(data, ok, panel, group)
            y = pd.to_numeric(sel[col], errors="coerce")
            keep = y.notna()
            if not keep.any():
                continue
            fig.add_box(y=y[keep].to_numpy("float64"), name=group, boxpoints="all", jitter=0.35, pointpos=0,
                        marker={"color": COLORS[g % len(COLORS)], "size": 6}, line={"width": 1.2},
                        text=np.array([hover_text(r, data.grid_keys) for _, r in sel[keep].iterrows()], dtype=object),
                        hovertemplate=f"%{{text}}<br>{esc(col)} = %{{y:.5g}}<extra></extra>", showlegend=c == 1,
                        legendgroup=group, row=1, col=c)
        fig.update_xaxes(title_text=data.group_key or "", row=1, col=c)
        fig.update_yaxes(title_text=col, row=1, col=c)
    return Chart(f"box-{i}", fig)


def _curves_or_notice(data: SweepPage, ok: pd.DataFrame) -> str | Chart:
    have = ok[ok["cell_id"].astype(str).isin(data.curves)]
    if not len(have):
        return message("No finished cell has a training history (history.csv) to plot.")
    panels = _panels(data, have)
    fig = _figure(data, panels, "validation loss per epoch: each cell (thin), mean over its group (bold)")
    for c, panel in enumerate(panels, start=1):
        for g, group in enumerate(_groups(data, have)):
            sel = _select(data, have, panel, group)
            if not len(sel):
                continue
            color = COLORS[g % len(COLORS)]
            xs: list[np.ndarray] = []
            ys: list[np.ndarray] = []
            texts: list[str] = []
            series = []
            for cid in sel["cell_id"].astype(str):
                h = data.curves[cid]
                e, v = h["epoch"].to_numpy("float64"), h["val_loss"].to_numpy("float64")
                series.append(pd.Series(v, index=e))
                # one trace for all of the group's cells, a NaN between two cells (a gap in the line): 500
                # cells stay fast to draw; numpy arrays travel as typed arrays, fast to build and to parse
                xs += [e, np.array([np.nan])]
                ys += [v, np.array([np.nan])]
                texts += [f"cell {esc(cid)}"] * (len(e) + 1)
            fig.add_scatter(x=np.concatenate(xs), y=np.concatenate(ys), mode="lines", name=f"{group} (cells)",
                            legendgroup=group, line={"color": color, "width": 0.8}, opacity=0.35,
                            text=np.array(texts, dtype=object), showlegend=c == 1,
                            hovertemplate="%{text}<br>epoch %{x}: val loss %{y:.5g}<extra></extra>", row=1, col=c)
            mean = pd.concat(series, axis=1).mean(axis=1).sort_index()  # epochs a run stopped before: missing
            fig.add_scatter(x=mean.index.to_numpy(), y=mean.to_numpy(), mode="lines+markers", name=f"{group} mean",
                            legendgroup=group, line={"color": color, "width": 2.5}, showlegend=c == 1,
                            hovertemplate=f"{esc(group)} mean<br>epoch %{{x}}: %{{y:.5g}}<extra></extra>", row=1,
                            col=c)
        fig.update_xaxes(title_text="epoch", row=1, col=c)
        fig.update_yaxes(title_text="validation loss", row=1, col=c)
    return Chart("curves", fig)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t confidence interval of the mean; low = high = mean for n < 2."""
    from scipy import stats

    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + level / 2, df=len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def _batch_or_notice(data: SweepPage, ok: pd.DataFrame) -> str | Chart:
    key = data.batch_key
    if key is None or key not in ok.columns or data.loss not in ok.columns:
        return message(f"No {data.loss} by {key} to plot.")
    panels = _panels(data, ok)
    fig = _figure(data, panels, f"{data.loss}: mean over seeds with a 95% confidence band (Student-t)")
    drawn = False
    for c, panel in enumerate(panels, start=1):
        for g, group in enumerate(_groups(data, ok)):
            sel = _select(data, ok, panel, group)
            rows = []
            for b in sorted(set(sel[key].astype(str)), key=_as_number):
                vals = pd.to_numeric(sel[sel[key].astype(str) == b][data.loss], errors="coerce").to_numpy()
                m, low, high = t_interval(vals)
                if math.isfinite(m):
                    rows.append((_as_number(b), m, low, high, int(np.isfinite(vals).sum())))
            if not rows:
                continue
            x, mean, lo, hi, n = (np.array(v, dtype="float64") for v in zip(*rows, strict=True))
            color = COLORS[g % len(COLORS)]
            fig.add_scatter(x=np.r_[x, x[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", mode="lines",
                            line={"width": 0}, fillcolor=_alpha(color, 0.18), hoverinfo="skip",
                            name=f"{group} 95% CI", legendgroup=group, showlegend=False, row=1, col=c)
            fig.add_scatter(x=x, y=mean, mode="lines+markers", name=group, legendgroup=group, showlegend=c == 1,
                            line={"color": color}, customdata=np.c_[lo, hi, n],
                            hovertemplate=(f"{esc(group)}<br>{esc(key)} %{{x}}: mean %{{y:.5g}}<br>95% CI "
                                           "%{customdata[0]:.5g} .. %{customdata[1]:.5g} (n %{customdata[2]})"
                                           "<extra></extra>"), row=1, col=c)
            drawn = True
        fig.update_xaxes(title_text=key, type="log", row=1, col=c)
        fig.update_yaxes(title_text=data.loss, row=1, col=c)
    return Chart("batch", fig) if drawn else message(f"No finished cell has a {data.loss} to plot.")


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _alpha(hex_color: str, a: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


# ---------------------------------------------------------------- tables of cells


def _failed_section(cells: pd.DataFrame) -> list[str | Chart]:
    failed = cells[cells["status"] == "failed"] if len(cells) else cells
    if not len(failed):
        return []
    rows = [[str(r["cell_id"]), str(r.get("error") or "")] for _, r in failed.iterrows()]
    return [f"<h2>Failed cells ({len(failed)})</h2>", table(["cell", "error"], rows)]


def _cells_section(data: SweepPage) -> str:
    cells = data.cells
    cols = ["cell_id", *[k for k in data.grid_keys if k in cells.columns], "status",
            *[c for c, _ in data.metrics if c in cells.columns], "run_dir"]
    rows = [[fmt(r.get(c), "g5") for c in cols] for _, r in cells.iterrows()]
    return (f"<details><summary>All {len(cells)} cells</summary>{table(cols, rows)}</details>")
