"""STUDY_DIR/verdicts.html: the claims study's verdicts as one page (plotly), from a list of plain dicts.

Each verdict is a dict; the known keys are shown first, in this order: claim, data, seeds, numbers,
p_corrected, verdict, rule. Whatever other keys a verdict has follow, so nothing the study wrote is hidden;
keys a verdict lacks show '-'. Nested values (a dict of numbers, a list of seeds) are shown as key: value
lines. When some verdicts have a numeric p_corrected, a chart shows them (log scale) per claim.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cryptonorm.render.html import Chart, esc, layout_defaults, message, write_page
from cryptonorm.text import fmt

KNOWN_KEYS = ("claim", "data", "seeds", "numbers", "p_corrected", "verdict", "rule")


def verdicts_page(verdicts: list[dict[str, Any]], out: Path, title: str = "Study verdicts") -> Path:
    """Write the verdicts page to `out` (plotly.min.js beside it); returns `out`."""
    body: list[str | Chart] = [f"<h1>{esc(title)}</h1>"]
    if not verdicts:
        body.append(message("No verdicts: the study produced none (run `cryptonorm study` first)."))
        return write_page(out, title, body)
    keys = [k for k in KNOWN_KEYS if any(k in v for v in verdicts)]
    keys += list(dict.fromkeys(k for v in verdicts for k in v if k not in KNOWN_KEYS))
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    rows = "".join("<tr>" + "".join(_cell(k, v.get(k)) for k in keys) + "</tr>" for v in verdicts)
    body.append(f'<table class="verdicts"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
    chart = _p_chart(verdicts)
    if chart is not None:
        body += ["<h2>Corrected p-values</h2>", chart]
    return write_page(out, title, body)


def _cell(key: str, value: Any) -> str:
    if key == "verdict" and value is not None:
        return f'<td class="verdict-{esc(str(value).lower())}">{esc(value)}</td>'
    if key == "p_corrected" and _number(value) is not None:
        return f"<td>{esc(fmt(value, 'p'))}</td>"
    return f"<td>{_show(value)}</td>"


def _show(value: Any) -> str:
    """Escaped HTML; dicts as 'key: value' lines, lists comma-separated, floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "<br>".join(f"{esc(k)}: {_show(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, float):
        return esc(fmt(value, "g4"))
    return esc(value)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _p_chart(verdicts: list[dict[str, Any]]) -> Chart | None:
    import plotly.graph_objects as go

    pts = [(str(v.get("claim", i + 1)), _number(v.get("p_corrected")), str(v.get("verdict", "")))
           for i, v in enumerate(verdicts)]
    pts = [(c, p, verdict) for c, p, verdict in pts if p is not None and p > 0]
    if not pts:
        return None
    fig = go.Figure(go.Scatter(x=[p for _, p, _ in pts], y=[c for c, _, _ in pts], mode="markers",
                               marker={"size": 11, "color": "#1f77b4"}, text=[v for _, _, v in pts],
                               hovertemplate="%{y}<br>p corrected %{x:.3g}<br>verdict: %{text}<extra></extra>",
                               name="p corrected"))
    fig.add_vline(x=0.05, line={"dash": "dot", "color": "#b42318"}, annotation_text="0.05")
    fig.update_xaxes(type="log", title_text="corrected p-value (log scale)")
    layout_defaults(fig, "corrected p-value per claim", 160 + 32 * len(pts))
    return Chart("pvalues", fig)
