"""The monitor page: the alarm per bar, each BatchNorm layer's drift, input PSI/KS, and the features that
drifted most at the last bar. Takes the plain frame of monitor.csv."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryptonorm.render.html import Chart, esc, hover_time, layout_defaults, minmax_indices, table, utc, write_page


def _chart(div_id: str, title: str, ts: np.ndarray, series: dict[str, np.ndarray]) -> Chart:
    import plotly.graph_objects as go

    fig = go.Figure()
    shown = False
    for name, y in series.items():
        keep = minmax_indices(np.nan_to_num(y, nan=0.0))  # display only: every value is in monitor.csv
        shown |= len(keep) < len(y)
        fig.add_trace(go.Scatter(x=utc(ts[keep]), y=y[keep], name=name, mode="lines",
                                 hovertemplate=hover_time(name)))
    return Chart(div_id, layout_defaults(fig, title + (" (display downsampled)" if shown else ""), 320))


def write_monitor_page(out: Path, frame: pd.DataFrame, signal: str, layers: Sequence[str],
                       features: Sequence[str], window: int, title: str) -> Path:
    """monitor.html from the monitor frame."""
    ts = frame["timestamp"].to_numpy()
    what = ("BatchNorm alarm: mean over layers of RMS standardized mean shift + RMS log variance ratio"
            if signal == "batchnorm" else "mean input PSI (the model has no BatchNorm layer)")
    body: list[str | Chart] = [
        f"<h1>Drift monitor: {esc(title)}</h1>",
        f'<p class="info">Statistics over the last {window} windows at each bar. alarm = {esc(what)}.</p>',
        _chart("alarm", "alarm", ts, {"alarm": frame["alarm"].to_numpy()}),
    ]
    if layers:
        series = {f"{kind} {name}": frame[f"bn_{kind}:{name}"].to_numpy() for name in layers
                  for kind in ("shift", "logvar")}
        body.append(_chart("layers", "BatchNorm layers: RMS standardized mean shift and log variance ratio", ts,
                           series))
    body.append(_chart("inputs", "input features", ts, {c: frame[c].to_numpy() for c in ("psi_mean", "psi_max",
                                                                                          "ks_max")}))
    last = frame.iloc[-1]
    rows = sorted(((f, float(last[f"psi:{f}"]), float(last[f"ks:{f}"])) for f in features), key=lambda r: -r[1])
    body.append(table(["feature", "PSI", "KS"], [(f, f"{p:.3f}", f"{k:.3f}") for f, p, k in rows],
                      caption="each input feature at the last bar, most drifted first (PSI > 0.25: a major shift)"))
    return write_page(out, f"monitor {title}", body)
