"""A sweep report's PNG plots (matplotlib, written atomically): boxes per norm, loss vs batch size, curves."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cryptonorm.evaluate.keys import BATCH_KEY, KIND_KEY, NORM_KEY, SEED_KEY
from cryptonorm.evaluate.stats import bootstrap_ci
from cryptonorm.render.plots import atomic_savefig
from cryptonorm.sweeps.meta import SweepMeta
from cryptonorm.sweeps.results import (
    grid_keys,
    grid_values,
    group_keys,
    labelled,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cryptonorm.sweeps.report import SweepReport


def _save(fig: Figure, path: Path) -> Path:
    """PNG written atomically: never a half-written image."""
    return atomic_savefig(fig, path, format="png", dpi=110)


def _panels(meta: SweepMeta) -> list[str | None]:
    return list(grid_values(meta, KIND_KEY)) if KIND_KEY in grid_keys(meta) else [None]


def x_key(meta: SweepMeta) -> str | None:
    """What the boxes are grouped by: the norm, else the first other grid key."""
    if NORM_KEY in grid_keys(meta):
        return NORM_KEY
    rest = [k for k in group_keys(meta) if k != KIND_KEY]
    return rest[0] if rest else None


def _figure(n_panels: int) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 4.8 * n_panels), 4.2), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _pooled(meta: SweepMeta, used: set[str]) -> str:
    rest = [k for k in grid_keys(meta) if k not in used]
    return f" (pooled over {', '.join(rest)})" if rest else ""


def plot_box(rep: SweepReport, metric: str, title: str, path: Path) -> Path | None:
    """Box plot of `metric` over seeds (and other keys) per norm, one panel per model kind."""
    meta = rep.meta
    x = x_key(meta)
    if metric not in rep.results.columns:
        return None
    lab = labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    groups = grid_values(meta, x) if x else ["all"]
    rng = np.random.default_rng(0)
    for ax, kind in zip(axes, panels, strict=True):
        sel = lab if kind is None else lab[lab[KIND_KEY] == kind]
        data = [pd.to_numeric((sel[sel[x] == g] if x else sel)[metric], errors="coerce").dropna().to_numpy()
                for g in groups]
        pos = [i for i, d in enumerate(data) if len(d)]
        if pos:
            ax.boxplot([data[i] for i in pos], positions=pos, widths=0.6, showfliers=False)
            for i in pos:  # the seeds themselves
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(data[i])), data[i], s=12, color="0.25", alpha=0.7,
                           zorder=3)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_xlabel(x or "")
        ax.set_ylabel(metric)
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta.name)
        ax.grid(alpha=0.3)
    fig.suptitle(title + _pooled(meta, {x or "", KIND_KEY, SEED_KEY}))
    return _save(fig, path)


def plot_batch_size(rep: SweepReport, path: Path) -> Path | None:
    """Primary metric vs batch size (log x), one line per norm: the mean over seeds with its bootstrap 95% CI
    (stats.bootstrap_ci); only with a batch-size grid or zip key."""
    meta = rep.meta
    if BATCH_KEY not in grid_keys(meta) or rep.loss not in rep.results.columns:
        return None
    lab = labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    sizes = sorted(grid_values(meta, BATCH_KEY), key=float)
    norms = grid_values(meta, NORM_KEY) if NORM_KEY in grid_keys(meta) else [None]
    for ax, kind in zip(axes, panels, strict=True):
        sel = lab if kind is None else lab[lab[KIND_KEY] == kind]
        for norm in norms:
            s = sel if norm is None else sel[sel[NORM_KEY] == norm]
            xs, mean, lo, hi = [], [], [], []
            for b in sizes:
                v = pd.to_numeric(s[s[BATCH_KEY] == b][rep.loss], errors="coerce").dropna().to_numpy("float64")
                if len(v):
                    m = float(v.mean())
                    ci = bootstrap_ci(v)
                    xs.append(float(b))
                    mean.append(m)
                    lo.append(m - ci[0] if np.isfinite(ci[0]) else 0.0)  # errorbar wants distances from the mean
                    hi.append(ci[1] - m if np.isfinite(ci[1]) else 0.0)
            if xs:
                ax.errorbar(xs, mean, yerr=[lo, hi], marker="o", capsize=3, label=norm or "all")
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(b) for b in sizes], sizes)
        ax.set_xlabel(BATCH_KEY)
        ax.set_ylabel(f"{rep.loss} (mean over seeds, 95% CI)")
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta.name)
        ax.grid(alpha=0.3)
        ax.legend(title=NORM_KEY if NORM_KEY in grid_keys(meta) else None, fontsize=8)
    fig.suptitle(f"{rep.loss} vs batch size{_pooled(meta, {BATCH_KEY, NORM_KEY, KIND_KEY, SEED_KEY})}")
    return _save(fig, path)


def plot_curves(rep: SweepReport, path: Path) -> Path | None:
    """Mean validation loss per epoch over seeds, one line per norm, one panel per model kind."""
    meta = rep.meta
    x = x_key(meta)
    lab = labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    if not len(lab):
        return None
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    any_line = False
    for ax, kind in zip(axes, panels, strict=True):
        sel = lab if kind is None else lab[lab[KIND_KEY] == kind]
        for g in grid_values(meta, x) if x else [None]:
            runs = sel if g is None else sel[sel[x] == g]
            curves = []
            for run_dir in runs["run_dir"].dropna():
                p = Path(run_dir) / "history.csv"
                with contextlib.suppress(OSError, ValueError, KeyError):
                    h = pd.read_csv(p)
                    curves.append(pd.Series(h["val_loss"].to_numpy("float64"), index=h["epoch"].to_numpy()))
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)  # epochs a run stopped before count as missing
                ax.plot(mean.index, mean.to_numpy(), marker="o", markersize=3, label=g or "all")
                any_line = True
        ax.set_xlabel("epoch")
        ax.set_ylabel("val loss (mean over seeds)")
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta.name)
        ax.grid(alpha=0.3)
        if any_line:
            ax.legend(title=x, fontsize=8)
    fig.suptitle("training curves" + _pooled(meta, {x or "", KIND_KEY, SEED_KEY}))
    return _save(fig, path) if any_line else None

