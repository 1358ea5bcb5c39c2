"""Two PNGs per claim: the rule's metric per grid combination over seeds, and each comparison's effect
with its 95% bootstrap CI against the claim's margin."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.render.plots import atomic_savefig


def claim_plots(record: dict[str, Any], ok: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """Write plots/claim<N>_metric.png and plots/claim<N>_effects.png; return those written."""
    out = []
    for fn in (_metric_plot, _effects_plot):
        p = fn(record, ok, plots_dir / f"claim{record['id']}_{fn.__name__.strip('_').split('_')[0]}.png")
        if p is not None:
            out.append(p)
    return out


def _metric_plot(record: dict[str, Any], ok: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    metric = record["rule"]["metric"]
    keys = [k for k in record["grid"] if k != "seed"]
    if metric not in ok.columns or not len(ok):
        return None
    labels, data = [], []
    groups = ok.groupby(keys, sort=False) if keys else [((), ok)]
    for combo, sel in groups:
        combo = combo if isinstance(combo, tuple) else (combo,)
        labels.append("\n".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, combo, strict=True)) or "all")
        data.append(pd.to_numeric(sel[metric], errors="coerce").dropna().to_numpy("float64"))
    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        if len(d):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color="0.3", alpha=0.7, zorder=3)
            mean = float(d.mean())
            half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else 0.0
            ax.errorbar([i], [mean], yerr=[half], fmt="o", color="C0", capsize=4, zorder=4)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(f"{metric} (seeds; mean ± 1.96 se)")
    ax.set_title(f"claim {record['id']}: {record['title']}", fontsize=9)
    ax.grid(alpha=0.3)
    return atomic_savefig(fig, path, dpi=110)


def _effects_plot(record: dict[str, Any], ok: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    comps = [c for c in record["comparisons"] if c.get("effect") is not None]
    if not comps:
        return None
    fig = Figure(figsize=(6.5, 1.0 + 0.45 * len(comps)), layout="constrained")
    ax = fig.subplots()
    for i, c in enumerate(comps):
        eff = 100 * float(c["effect"])
        lo = 100 * float(c["ci_low"]) if c.get("ci_low") is not None else eff
        hi = 100 * float(c["ci_high"]) if c.get("ci_high") is not None else eff
        color = "C2" if c.get("supports") else "C3" if c.get("opposes") else "0.4"
        ax.errorbar([eff], [i], xerr=[[eff - lo], [hi - eff]], fmt="o" if c["role"] == "primary" else "s",
                    color=color, capsize=3)
    margin = 100 * float(record["rule"]["margin"])
    ax.axvline(0, color="0.2", lw=0.8)
    claimed = record["rule"]["claimed"]
    for m in ([margin] if claimed == "higher" else [-margin] if claimed == "lower" else [margin, -margin]):
        if margin:
            ax.axvline(m, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(comps)), [c["comparison"] for c in comps], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"effect on {record['rule']['metric']} (%, 95% bootstrap CI); dashed: margin")
    ax.set_title(f"claim {record['id']}: {record['verdict']}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return atomic_savefig(fig, path, dpi=110)
