"""Interactive HTML pages (plotly): the page shell, tables, display downsampling, the offline plotly.js.

Every page is self-contained and offline: the plotly.js bundle of the installed plotly package is written
ONCE beside the pages as `plotly.min.js` and loaded with a relative <script src>, so a report folder copied
to a machine without internet opens as it did here; no page names a CDN or any other network address.

Display downsampling (`minmax_indices`): a series longer than 2 x `DISPLAY_BUCKETS` points is cut into
`DISPLAY_BUCKETS` consecutive buckets of equal length (one per horizontal pixel of a ~2000 px wide chart),
and each bucket keeps its minimum and its maximum point (in time order), plus the series' first and last
point. Every spike and crash stays visible at full zoom-out; only what lies between a bucket's extremes is
dropped from the picture. It is for DISPLAY only: every metric and table is computed on the full series
before any point is dropped, and each chart that was downsampled says so in its title.

plotly is an optional dependency (`pip install 'cryptonorm[html]'`); `require_plotly` names that fix.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryptonorm.atomic import atomic_path, write_text_atomic
from cryptonorm.errors import ConfigError

if TYPE_CHECKING:
    import plotly.graph_objects as go

PLOTLY_JS = "plotly.min.js"  # written once beside the pages: no CDN, no network request
DISPLAY_BUCKETS = 2000  # buckets of the min/max display downsampling (about one per pixel of a wide chart)
INSTALL_HINT = "pip install 'cryptonorm[html]' (or plotly>=5), or use --format png"
FORMATS = ("png", "html", "both")


def require_plotly() -> None:
    """Raise ConfigError naming the install command when plotly is missing."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ConfigError(f"--format html needs plotly, which is not installed: {INSTALL_HINT}") from None


def have_plotly() -> bool:
    """True when plotly can be imported (the html format is then available)."""
    try:
        require_plotly()
    except ConfigError:
        return False
    return True


def formats(fmt: str | None) -> tuple[str, ...]:
    """'png' | 'html' | 'both' -> the formats to write; None: both when plotly is installed, else png."""
    if fmt is None:
        return ("png", "html") if have_plotly() else ("png",)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not valid; use one of {', '.join(FORMATS)}")
    out = ("png", "html") if fmt == "both" else (fmt,)
    if "html" in out:
        require_plotly()
    return out


# ---------------------------------------------------------------- display downsampling


def minmax_indices(y: np.ndarray, buckets: int = DISPLAY_BUCKETS) -> np.ndarray:
    """Sorted indices of the points to DRAW of series `y` (N,): per bucket its min and max (see module doc).

    All indices when N <= 2 x buckets. NaN points are never chosen over a finite one; a bucket of NaN only
    keeps its first point, so an outage still breaks the line.
    """
    y = np.asarray(y, dtype="float64")
    n = len(y)
    if n <= 2 * buckets:
        return np.arange(n)
    size = math.ceil(n / buckets)
    rows = math.ceil(n / size)
    padded = np.full(rows * size, np.nan)
    padded[:n] = y
    grid = padded.reshape(rows, size)  # (buckets, size)
    lo = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    hi = np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
    base = np.arange(rows) * size
    idx = np.concatenate([base + lo, base + hi, [0, n - 1]])
    return np.unique(idx[idx < n])


def bucket_any(flag: np.ndarray, buckets: int = DISPLAY_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each bucket, whether any point in it is True): a boolean series for step shading."""
    flag = np.asarray(flag, dtype=bool)
    n = len(flag)
    if n <= 2 * buckets:
        return np.arange(n), flag
    size = math.ceil(n / buckets)
    starts = np.arange(0, n, size)
    return starts, np.logical_or.reduceat(flag, starts)


def utc(ms: np.ndarray) -> np.ndarray:
    """Milliseconds since the epoch (UTC) -> datetime64[ms], which plotly shows as a date axis."""
    return np.asarray(ms, dtype="int64").astype("datetime64[ms]")


def hover_time(what: str, value: str = "%{y:,.4g}") -> str:
    """A hover template with the bar's UTC date and time."""
    return f"%{{x|%Y-%m-%d %H:%M}} UTC<br>{what}: {value}<extra></extra>"


# ---------------------------------------------------------------- page pieces


@dataclass(frozen=True)
class Chart:
    """One plotly figure on a page; `traces` is how many traces it draws (the browser tests check it)."""

    div_id: str
    figure: go.Figure

    @property
    def traces(self) -> int:
        return len(self.figure.data)


def esc(value: Any) -> str:
    """Text for HTML: escaped, None as '-'."""
    return "-" if value is None else html.escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "", cls: str = "") -> str:
    """An HTML table; cells are escaped text."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="{esc(cls)}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def message(text: str) -> str:
    """A visible notice in place of a chart that has nothing to show (never an empty chart)."""
    return f'<p class="notice">{esc(text)}</p>'


def chart_div(chart: Chart) -> str:
    return f'<div id="{esc(chart.div_id)}" class="chart" data-traces="{chart.traces}"></div>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em 2em;color:#222;max-width:1500px}
h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.info{color:#555;margin:.1em 0} .chart{width:100%;min-height:300px}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0} caption{text-align:left;color:#555;padding:.3em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.notice{background:#fff6e0;border:1px solid #e8c878;padding:.6em 1em;border-radius:4px}
.verdict-supported{color:#1a7f37;font-weight:600} .verdict-refuted{color:#b42318;font-weight:600}
.verdict-inconclusive{color:#8a6d00;font-weight:600}
"""


def page(title: str, body: Sequence[str | Chart], plotly_src: str = PLOTLY_JS) -> str:
    """A whole HTML document: `body` parts in order (HTML fragments, or charts drawn from embedded JSON)."""
    import plotly.io as pio

    parts, figs = [], []
    for part in body:
        if isinstance(part, Chart):
            parts.append(chart_div(part))
            figs.append(f'"{part.div_id}": {pio.to_json(part.figure, validate=False)}')
        else:
            parts.append(part)
    # "</" inside a <script> would end it early: JSON allows the escaped form "<\/"
    data = ("{" + ",\n".join(figs) + "}").replace("</", "<\\/")
    config = json.dumps({"responsive": True, "displaylogo": False, "showLink": False, "scrollZoom": False})
    # window.reportDrawnMs: when every chart is drawn (ms after navigation start; the benchmark reads it)
    script = (f"const FIGURES = {data};\n"
              f"Promise.all(Object.entries(FIGURES).map(([id, fig]) =>\n"
              f"  Plotly.newPlot(id, fig.data, fig.layout, {config})))\n"
              f"  .then(() => {{ window.reportDrawnMs = performance.now(); }});\n")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style>"
            f'<script src="{esc(plotly_src)}"></script></head>\n<body>\n'
            + "\n".join(parts) + f"\n<script>\n{script}</script>\n</body></html>\n")


def write_plotly_js(folder: Path) -> Path:
    """plotly.min.js of the installed plotly, written beside the pages once (again only if it differs)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs().encode("utf-8")
    path = Path(folder) / PLOTLY_JS
    if not (path.exists() and path.stat().st_size == len(js)):
        with atomic_path(path) as tmp:
            tmp.write_bytes(js)
    return path


def write_page(out: Path, title: str, body: Sequence[str | Chart], js_dir: Path | None = None) -> Path:
    """Write the page atomically; returns `out`. plotly.min.js goes to `js_dir` (default: beside the page), a
    folder that holds the page's folder: the pages of one folder tree (a study's verdicts and each claim's
    sweep report) share one copy, loaded by a relative path, so the tree still opens offline."""
    require_plotly()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    js_dir = out.parent if js_dir is None else Path(js_dir)
    if not out.parent.resolve().is_relative_to(js_dir.resolve()):
        raise ValueError(f"{js_dir} does not hold {out.parent}: a relative plotly.js path would leave the tree")
    js = write_plotly_js(js_dir)
    src = os.path.relpath(js.resolve(), out.parent.resolve()).replace(os.sep, "/")
    write_text_atomic(out, page(title, body, src))
    return out


def layout_defaults(fig: go.Figure, title: str, height: int) -> go.Figure:
    """The common look: white template, title, legend on top, height."""
    fig.update_layout(template="plotly_white", title={"text": title, "font": {"size": 14}}, height=height,
                      margin={"l": 70, "r": 30, "t": 60, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0})
    return fig
