"""The heatmap of a backtest grid (`cryptonorm backtest RUN_DIR --grid ...`): Sharpe after costs per cell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryptonorm.render.plots import atomic_savefig
from cryptonorm.text import fmt

if TYPE_CHECKING:
    import pandas as pd


def grid_matrix(table: pd.DataFrame, keys: list[str], value: str) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, (rows, cols) values): the first key down, the second across (one column
    when there is one key). Labels keep the order the values were given in."""
    rows = list(dict.fromkeys(table[keys[0]].tolist()))
    cols = list(dict.fromkeys(table[keys[1]].tolist())) if len(keys) > 1 else [None]
    z = np.full((len(rows), len(cols)), np.nan)
    for _, r in table.iterrows():
        j = cols.index(r[keys[1]]) if len(keys) > 1 else 0
        z[rows.index(r[keys[0]]), j] = float(r[value])
    return [label(v) for v in rows], [label(v) for v in cols] if len(keys) > 1 else [value], z


def label(v: object) -> str:
    """A grid value as given: 2 not 2.0, 0.0002 not 2e-04."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{float(v):.10g}"
    return str(v)


def plot_grid(table: pd.DataFrame, keys: list[str], path: Path, title: str = "", value: str = "val_sharpe",
              dpi: int = 120) -> Path:
    """A heatmap of `value` over the grid (diverging colours centred on 0), each cell labelled, the chosen
    cells (table["chosen"]) outlined; PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    row_labels, col_labels, z = grid_matrix(table, keys, value)
    _, _, chosen = grid_matrix(table.assign(_c=table["chosen"].astype(float)), keys, "_c")
    finite = z[np.isfinite(z)]
    span = float(np.abs(finite).max()) if len(finite) else 1.0
    span = span if span > 0 and math.isfinite(span) else 1.0
    fig = Figure(figsize=(1.6 + 1.3 * len(col_labels), 1.4 + 0.55 * len(row_labels)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(z), cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            ax.text(j, i, fmt(z[i, j], "num"), ha="center", va="center", fontsize=9)
            if chosen[i, j] == 1.0:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_ylabel(f"backtest.{keys[0]}")
    ax.set_xlabel(f"backtest.{keys[1]}" if len(keys) > 1 else "")
    fig.colorbar(im, ax=ax, label="Sharpe after costs (annualized)")
    fig.suptitle(f"{title}\noutlined: chosen on this split" if title else "outlined: chosen", fontsize=9)
    return atomic_savefig(fig, path, dpi=dpi)
