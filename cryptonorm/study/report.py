"""What a sweep found: tables as data, significance tests, then summary.md and PNG plots (no training).

Aggregation: mean and std over seeds for every combination of the other grid keys.
Significance (when `model.norm` is a grid key): for each combination of the keys other than the norm and
the seed, each norm against a reference norm, paired by seed: paired t-test and Wilcoxon on the test loss
(test MSE; log-loss for direction targets) of the cells that share a seed, and Diebold-Mariano on the
squared test errors of the bars both runs forecast (mean over seeds of the per-seed differentials); see
stats.py. Tables as text: summary.py. Plots: plots.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.errors import ConfigError
from cryptonorm.study.results import (
    NORM_KEY,
    SEED_KEY,
    SUMMARY_METRICS,
    collect_results,
    combos,
    grid_keys,
    grid_values,
    group_keys,
    labelled,
    load_sweep_dir,
    results_frame,
    select,
    throughput,
    write_results_csv,
)
from cryptonorm.study.stats import TestResult, diebold_mariano, loss_differential, paired_t, paired_wilcoxon

SUMMARY_MD = "summary.md"


@dataclass
class SweepReport:
    """A sweep's results, aggregates and tests, as frames (what summary.md and the terminal show)."""

    meta: dict[str, Any]
    results: pd.DataFrame  # one row per cell (sweep_results.csv)
    summary: pd.DataFrame  # mean/std over seeds per combination, with the p-values vs the reference
    tests: pd.DataFrame  # one row per (combination, norm != reference)
    loss: str  # the column the tests use: test_mse, or test_log_loss for direction targets
    reference: str | None
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)  # results.throughput: cells/hour, devices

    @property
    def counts(self) -> dict[str, int]:
        s = self.results["status"]
        return {"cells": len(s), "ok": int((s == "ok").sum()), "failed": int((s == "failed").sum()),
                "pending": int((s == "pending").sum())}





def aggregate(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """Mean and std over seeds of each metric, per combination of the other grid keys (grid order)."""
    lab = labelled(df, meta)
    keys = group_keys(meta)
    metrics = [m for m in SUMMARY_METRICS if m in lab.columns and lab[m].notna().any()]
    rows = []
    for combo in combos(meta, keys):
        sel = select(lab, combo)
        ok = sel[sel["status"] == "ok"]
        row: dict[str, Any] = {**combo, "n_ok": len(ok), "n_failed": int((sel["status"] == "failed").sum()),
                               "n_pending": int((sel["status"] == "pending").sum())}
        for m in metrics:
            vals = pd.to_numeric(ok[m], errors="coerce").dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def significance(df: pd.DataFrame, meta: dict[str, Any], sweep_dir: Path, reference: str | None,
                 loss: str) -> tuple[pd.DataFrame, str | None, list[str]]:
    """Each norm vs the reference, per combination of the other keys, paired by seed."""
    notes: list[str] = []
    if NORM_KEY not in meta["grid"]:
        return pd.DataFrame(), None, [f"no significance tests: {NORM_KEY} is not a grid key"]
    norms = grid_values(meta, NORM_KEY)
    ref = reference if reference is not None else (meta.get("reference") or norms[0])
    if ref not in norms:
        raise ConfigError(f"--reference {ref!r} is not a {NORM_KEY} value of this sweep; choose one of "
                          f"{', '.join(norms)}")
    if len(norms) < 2:
        return pd.DataFrame(), ref, [f"no significance tests: only one {NORM_KEY} value"]
    lab = labelled(df, meta)
    lab = lab[lab["status"] == "ok"]
    others = [k for k in group_keys(meta) if k != NORM_KEY]
    horizon = int(meta.get("horizon", 1))
    rows = []
    cache: dict[str, pd.DataFrame | None] = {}
    for combo in combos(meta, others):
        sel = select(lab, combo)
        base = sel[sel[NORM_KEY] == ref].set_index("seed")
        for norm in norms:
            if norm == ref:
                continue
            cur = sel[sel[NORM_KEY] == norm].set_index("seed")
            seeds = [s for s in cur.index if s in base.index]
            a = pd.to_numeric(cur.loc[seeds, loss], errors="coerce").to_numpy("float64")
            b = pd.to_numeric(base.loc[seeds, loss], errors="coerce").to_numpy("float64")
            t, w = paired_t(a, b), paired_wilcoxon(a, b)
            pairs = []
            for s in seeds:
                fa, fb = (_forecasts(Path(x), cache) for x in (cur.loc[s, "run_dir"], base.loc[s, "run_dir"]))
                if fa is not None and fb is not None:
                    pairs.append((fa, fb))
            dm = diebold_mariano(loss_differential(pairs), horizon) if pairs else \
                TestResult(math.nan, math.nan, 0, "DM: no forecasts.csv pairs found")
            diff = a - b
            rows.append({**combo, NORM_KEY: norm, "reference": ref, "n_seeds": t.n,
                         "mean_diff": float(np.nanmean(diff)) if len(diff) else math.nan,
                         "t": t.statistic, "p_t": t.pvalue, "wilcoxon": w.statistic, "p_wilcoxon": w.pvalue,
                         "dm": dm.statistic, "p_dm": dm.pvalue, "dm_bars": dm.n,
                         "note": "; ".join(x for x in (t.note, w.note, dm.note) if x)})
    return pd.DataFrame(rows), ref, notes


def _forecasts(run_dir: Path, cache: dict[str, pd.DataFrame | None]) -> pd.DataFrame | None:
    key = str(run_dir)
    if key not in cache:
        p = run_dir / "forecasts.csv"
        try:
            cache[key] = pd.read_csv(p, usecols=["timestamp", "forecast", "y", "split"]) if p.exists() else None
        except (OSError, ValueError):
            cache[key] = None
    return cache[key]


def build_report(sweep_dir: Path, reference: str | None = None) -> SweepReport:
    """Everything the tables show, from the cells' result.json files (nothing is written)."""
    sweep_dir = Path(sweep_dir)
    meta = load_sweep_dir(sweep_dir)
    raw = collect_results(sweep_dir)
    df = results_frame(raw, grid_keys(meta), sweep_dir)
    loss = "test_log_loss" if meta.get("target") == "direction" else "test_mse"
    summary = aggregate(df, meta)
    tests, ref, notes = significance(df, meta, sweep_dir, reference, loss)
    if len(tests):
        keys = [k for k in group_keys(meta)]
        summary = summary.merge(tests[[*keys, "p_t", "p_wilcoxon", "p_dm"]], on=keys, how="left")
    failed = df[df["status"] == "failed"]
    if len(failed):
        notes.append(f"{len(failed)} cell(s) failed; `cryptonorm sweep` again retries them")
    if SEED_KEY not in meta["grid"]:
        notes.append("seed is not a grid key: one run per combination, no spread and no paired tests over seeds")
    return SweepReport(meta, df, summary, tests, loss, ref, notes, throughput=throughput(raw))



def render(sweep_dir: Path, reference: str | None = None, fmt: str | None = None) -> SweepReport:
    """Re-read every cell's result; write sweep_results.csv, summary.md, and per `fmt` (png | html | both;
    None: both when plotly is installed, else png) plots/*.png and report.html (no training)."""
    from cryptonorm.render.html import formats
    from cryptonorm.study.plots import plot_batch_size, plot_box, plot_curves, x_key

    sweep_dir = Path(sweep_dir)
    want = formats(fmt)  # a bad --format is an error before anything is written
    rep = build_report(sweep_dir, reference)
    rep.paths["results"] = write_results_csv(sweep_dir, collect_results(sweep_dir))
    plots = sweep_dir / "plots"
    if "png" in want:
        made = [
            plot_box(rep, rep.loss, f"{rep.loss} by {x_key(rep.meta) or 'cell'}", plots / "test_loss_by_norm.png"),
            plot_box(rep, "bt_sharpe", f"test-split Sharpe by {x_key(rep.meta) or 'cell'}",
                     plots / "sharpe_by_norm.png"),
            plot_batch_size(rep, plots / "test_loss_vs_batch_size.png"),
            plot_curves(rep, plots / "training_curves.png"),
        ]
        rep.plots = [p for p in made if p is not None]
        rep.paths["plots"] = plots
    from cryptonorm.pipeline import write_text_atomic
    from cryptonorm.study.summary import markdown

    rep.paths["summary"] = sweep_dir / SUMMARY_MD
    write_text_atomic(rep.paths["summary"], markdown(rep))
    if "html" in want:
        from cryptonorm.study.html import write_html

        rep.paths["html"] = write_html(rep, sweep_dir)
    return rep
