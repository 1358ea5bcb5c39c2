"""What a sweep found: tables as data, significance tests, then summary.md and PNG plots (no training).

Aggregation: mean and std over seeds for every combination of the other grid keys.
Significance (when `model.norm` is a grid or zip key), on each of the sweep's metrics (`metric:` in the
sweep file; by default the task's proper ones, e.g. QLIKE and variance MSE for volatility): for each
combination of the keys other than the norm and the seed, each norm against a reference norm, paired by
seed (compare.py: effect, bootstrap CI, t and Wilcoxon), plus Diebold-Mariano PER SEED on that metric's
per-bar test losses, combined over seeds by a sign test (stats.py). Volatility runs' baselines (HAR, ...)
are compared the same way. Holm's correction runs across every p-value of the table. With a batch-size
key: each norm's degradation from its largest batch and the norm x batch interaction test.
The data only: its writers (summary.md, plots, report.html) are outputs.py (render), summary.py, plots.py
and html.py, which import this module and never the other way round.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cryptonorm.errors import ConfigError
from cryptonorm.evaluate.compare import add_holm, degradation, paired_row
from cryptonorm.evaluate.keys import BATCH_KEY, NORM_KEY, SEED_KEY
from cryptonorm.evaluate.metrics import DEFAULT_METRICS
from cryptonorm.evaluate.stats import BAR_LOSSES, bar_loss, common_bars, dm_per_seed, min_pvalues
from cryptonorm.sweeps.meta import SweepMeta
from cryptonorm.sweeps.results import (
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
)

P_COLUMNS = ("p_t", "p_wilcoxon", "p_dm")  # one Holm family per tests table


@dataclass
class SweepReport:
    """A sweep's results, aggregates and tests, as frames (what summary.md and the terminal show)."""

    meta: SweepMeta
    results: pd.DataFrame  # one row per cell (sweep_results.csv)
    summary: pd.DataFrame  # mean/std over seeds per combination, with the primary metric's Holm p-values
    tests: pd.DataFrame  # one row per (combination, norm or baseline != reference, metric); p and p Holm
    loss: str  # the primary metric's column (test_qlike, test_mse, test_log_loss, ...): plots, interaction
    reference: str | None
    metrics: list[str] = field(default_factory=list)  # every tested metric's column, primary first
    degradation: pd.DataFrame = field(default_factory=pd.DataFrame)  # per norm and batch size
    interaction: pd.DataFrame = field(default_factory=pd.DataFrame)  # norm x batch size, per group
    min_p: dict[str, float] = field(default_factory=dict)  # smallest reachable p per test with these seeds
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)  # results.throughput: cells/hour, devices

    @property
    def counts(self) -> dict[str, int]:
        s = self.results["status"]
        return {"cells": len(s), "ok": int((s == "ok").sum()), "failed": int((s == "failed").sum()),
                "pending": int((s == "pending").sum())}


def aggregate(df: pd.DataFrame, meta: SweepMeta, extra: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean and std over seeds of each metric, per combination of the other grid keys (grid order)."""
    lab = labelled(df, meta)
    keys = group_keys(meta)
    wanted = list(dict.fromkeys([*extra, *SUMMARY_METRICS]))
    metrics = [m for m in wanted if m in lab.columns and pd.to_numeric(lab[m], errors="coerce").notna().any()]
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


def metric_columns(meta: SweepMeta) -> list[str]:
    """The tested metrics' result columns: the sweep file's `metric:`, else the target kind's defaults."""
    names = meta.metrics or list(DEFAULT_METRICS.get(str(meta.target), ("mse",)))
    return [f"test_{m}" for m in names]


def resolve_reference(meta: SweepMeta, reference: str | None) -> str | None:
    """The reference norm: --reference, else the sweep file's, else the first norm listed; checked."""
    if NORM_KEY not in grid_keys(meta):
        return None
    norms = grid_values(meta, NORM_KEY)
    ref = reference if reference is not None else (meta.reference or norms[0])
    if ref not in norms:
        raise ConfigError(f"--reference {ref!r} is not a {NORM_KEY} value of this sweep; choose one of "
                          f"{', '.join(norms)}")
    return ref


class _Forecasts:
    """forecasts.csv of each run, read once per report."""

    def __init__(self) -> None:
        self.cache: dict[str, pd.DataFrame | None] = {}

    def __call__(self, run_dir: object) -> pd.DataFrame | None:
        key = str(run_dir)
        if key not in self.cache:
            p = Path(key) / "forecasts.csv"
            try:
                self.cache[key] = pd.read_csv(p) if isinstance(run_dir, str) and p.exists() else None
            except (OSError, ValueError):
                self.cache[key] = None
        return self.cache[key]


def _dm(cur: pd.DataFrame, ref: pd.DataFrame | None, metric: str, horizon: int, read: _Forecasts,
        baseline: str | None = None) -> dict[str, Any]:
    """Per-seed DM of the runs in `cur` against the same seed's run in `ref` (or its baseline column)."""
    name = metric.removeprefix("test_")
    if name not in BAR_LOSSES:
        return {"note": f"no DM for {name} (not a mean of per-bar losses)"}
    pairs, dropped = [], []
    for seed, row in cur.iterrows():
        if ref is not None and not baseline and seed not in ref.index:
            continue  # no reference run of this seed: not a pair (the paired tests drop it alike)
        fa = read(row["run_dir"])
        fb = fa if baseline else (read(ref.loc[seed, "run_dir"]) if ref is not None else None)
        if fa is None or fb is None:
            dropped.append(f"{seed} (forecasts.csv missing or unreadable)")
            continue
        try:
            a, b = common_bars(bar_loss(fa, name), bar_loss(fb, name, baseline or "forecast"))
        except KeyError as e:
            dropped.append(f"{seed} (forecasts.csv has no column {e})")
            continue
        pairs.append((a, b))
    res = dm_per_seed(pairs, horizon)
    notes = [res.note] if res.note else []
    if dropped:  # a seed left out of the DM sign test is said, never silently dropped
        notes.append(f"DM without seed {', '.join(dropped)}")
    return {"dm_median": res.median_stat, "dm_seeds": f"{res.n_better}-/{res.n_worse}+ "
            f"({res.n_better_sig}-/{res.n_worse_sig}+ at 5%)" if res.n_seeds else "-", "p_dm": res.pvalue,
            "dm_bars": int(max((len(a) for a, _ in pairs), default=0)), "note": "; ".join(notes)}


def significance(df: pd.DataFrame, meta: SweepMeta, ref: str | None,
                 metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Each norm vs the reference and each baseline, per combination of the other keys and per metric,
    paired by seed; Holm across every p-value of the table."""
    if ref is None:
        return pd.DataFrame(), [f"no significance tests: {NORM_KEY} is not a grid key"]
    norms = grid_values(meta, NORM_KEY)
    lab = labelled(df, meta)
    lab = lab[lab["status"] == "ok"]
    others = [k for k in group_keys(meta) if k != NORM_KEY]
    horizon, read, notes, rows = meta.horizon, _Forecasts(), [], []
    for metric in metrics:
        if metric not in lab.columns or pd.to_numeric(lab[metric], errors="coerce").isna().all():
            notes.append(f"{metric.removeprefix('test_')}: no finished cell reports it; not tested")
            continue
        pattern = re.compile(rf"baseline_(.+?)_{metric.removeprefix('test_')}")
        baselines = sorted({m.group(1) for c in lab.columns if (m := pattern.fullmatch(c))})
        for combo in combos(meta, others):
            sel = select(lab, combo)
            base = sel[sel[NORM_KEY] == ref].drop_duplicates(SEED_KEY).set_index(SEED_KEY)
            for norm in norms:
                cur = sel[sel[NORM_KEY] == norm].drop_duplicates(SEED_KEY).set_index(SEED_KEY)
                a = pd.to_numeric(cur[metric], errors="coerce")
                if norm != ref and len(norms) > 1:
                    b = pd.to_numeric(base[metric], errors="coerce")
                    rows.append({**combo, NORM_KEY: norm, "reference": ref, "metric": metric,
                                 **_merge(paired_row(a, b, metric), _dm(cur, base, metric, horizon, read))})
                for name in baselines:
                    b = pd.to_numeric(cur[f"baseline_{name}_{metric[5:]}"], errors="coerce")
                    rows.append({**combo, NORM_KEY: norm, "reference": f"baseline {name}", "metric": metric,
                                 **_merge(paired_row(a, b, metric),
                                          _dm(cur, None, metric, horizon, read, baseline=f"baseline_{name}"))})
    if len(norms) < 2:
        notes.append(f"no norm-vs-norm tests: only one {NORM_KEY} value")
    tests = add_holm(pd.DataFrame(rows), P_COLUMNS) if rows else pd.DataFrame()
    return tests, notes


def _merge(row: dict[str, Any], dm: dict[str, Any]) -> dict[str, Any]:
    note = "; ".join(n for n in (row.pop("note", ""), dm.pop("note", "")) if n)
    return {**row, **dm, "note": note}


def build_report(sweep_dir: Path, reference: str | None = None) -> SweepReport:
    """Everything the tables show, from the cells' result.json files (nothing is written)."""
    sweep_dir = Path(sweep_dir)
    meta = load_sweep_dir(sweep_dir)
    raw = collect_results(sweep_dir)
    df = results_frame(raw, grid_keys(meta), sweep_dir)
    metrics = metric_columns(meta)
    loss = metrics[0]
    ref = resolve_reference(meta, reference)
    summary = aggregate(df, meta, metrics)
    tests, notes = significance(df, meta, ref, metrics)
    if len(tests):
        keys = group_keys(meta)
        prim = tests[(tests["metric"] == loss) & (tests["reference"] == ref)]
        cols = [c for c in ("p_t_holm", "p_wilcoxon_holm", "p_dm_holm") if c in prim.columns]
        summary = summary.merge(prim[[*keys, *cols]], on=keys, how="left") if len(prim) else summary
    deg, inter = pd.DataFrame(), pd.DataFrame()
    if BATCH_KEY in grid_keys(meta) and NORM_KEY in grid_keys(meta) and loss in df.columns:
        lab = labelled(df, meta)
        others = [k for k in group_keys(meta) if k not in (NORM_KEY, BATCH_KEY)]
        deg, inter = degradation(lab, loss, ref, by=others)
    failed = df[df["status"] == "failed"]
    if len(failed):
        notes.append(f"{len(failed)} cell(s) failed; `cryptonorm sweep` again retries them")
    if "backtest_error" in df.columns and df["backtest_error"].notna().any():
        n = int(df["backtest_error"].notna().sum())
        notes.append(f"{n} cell(s) trained but their backtest failed (metrics kept): "
                     f"{df['backtest_error'].dropna().iloc[0]}")
    if SEED_KEY not in grid_keys(meta):
        notes.append("seed is not a grid key: one run per combination, no spread and no paired tests over seeds")
    ok = df[df["status"] == "ok"]
    n_seeds = int(ok[SEED_KEY].nunique()) if len(ok) else 0
    return SweepReport(meta, df, summary, tests, loss, ref, metrics, deg, inter, min_pvalues(n_seeds), notes,
                       throughput=throughput(raw))
