"""Comparisons a verdict can rest on: frames of results in, frames of effects and tests out (pure).

The API the study's verdicts call (each returns one row per comparison, Holm-corrected across the table):

    compare(results, "test_qlike", reference="none", by=["model.kind"])   each norm vs the reference,
        paired by seed: n_seeds, mean, mean_ref, effect (mean of norm - reference), its bootstrap 95% CI,
        effect_rel (effect / |mean_ref|), t and Wilcoxon statistics and p-values, p Holm, the smallest
        p-value the Wilcoxon test can reach with that many seeds, and `better` (the effect's direction
        read through the metric: lower is better for losses, higher for IC/AUC/accuracy).
    degradation(results, "test_mse", reference="none", by=[...])   each norm's loss at every batch size
        minus its loss at the largest batch, paired by seed (with CI and tests), and per `by` group the
        norm x batch-size interaction F-test (two-way repeated-measures ANOVA, seeds as subjects).
    add_holm(frame, ["p_t", "p_wilcoxon", "p_dm"])   Holm across every p-value of those columns together.

`results` is the sweep's results frame (sweep_results.csv / SweepReport.results): one row per cell with the
grid keys, `seed`, `status` (only "ok" rows count) and metric columns such as test_qlike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.evaluate.keys import BATCH_KEY, NORM_KEY, SEED_KEY
from cryptonorm.evaluate.metrics import higher_is_better
from cryptonorm.evaluate.stats import bootstrap_ci, holm, interaction_anova, min_pvalues, paired_t, paired_wilcoxon


def _column(df: pd.DataFrame, metric: str) -> str:
    col = metric if metric in df.columns else f"test_{metric}"
    if col not in df.columns:
        raise KeyError(f"no cell has the metric {metric!r}")
    return col


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def _groups(df: pd.DataFrame, by: Sequence[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    if not by:
        return [({}, df)]
    return [(dict(zip(by, k if isinstance(k, tuple) else (k,), strict=True)), g)
            for k, g in df.groupby(list(by), sort=False, dropna=False)]


def _by_seed(df: pd.DataFrame, col: str) -> pd.Series:
    s = pd.to_numeric(df.set_index(SEED_KEY)[col], errors="coerce")
    return s[~s.index.duplicated()]


def paired_row(a: pd.Series, b: pd.Series, metric: str, seed: int = 0) -> dict[str, Any]:
    """Effect, bootstrap CI and paired tests of a - b over the seeds both have (Series indexed by seed)."""
    common = [s for s in a.index if s in b.index and np.isfinite(a[s]) and np.isfinite(b[s])]
    x, y = a[common].to_numpy("float64"), b[common].to_numpy("float64")
    d = x - y
    t, w = paired_t(x, y), paired_wilcoxon(x, y)
    lo, hi = bootstrap_ci(d, seed=seed)
    effect = float(d.mean()) if len(d) else math.nan
    mean_ref = float(y.mean()) if len(y) else math.nan
    direction = higher_is_better(metric)
    better = "" if direction is None or not np.isfinite(effect) or effect == 0 else \
        ("yes" if (effect > 0) == direction else "no")
    return {"n_seeds": len(d), "mean": float(x.mean()) if len(x) else math.nan, "mean_ref": mean_ref,
            "effect": effect, "ci_low": lo, "ci_high": hi,
            "effect_rel": effect / abs(mean_ref) if mean_ref not in (0.0,) and np.isfinite(mean_ref) else math.nan,
            "better": better, "t": t.statistic, "p_t": t.pvalue, "wilcoxon": w.statistic, "p_wilcoxon": w.pvalue,
            "min_p_wilcoxon": min_pvalues(len(d))["wilcoxon"],
            "note": "; ".join(n for n in (t.note, w.note) if n)}


def compare(results: pd.DataFrame, metric: str, reference: str, by: Sequence[str] = (), key: str = NORM_KEY,
            holm_columns: Sequence[str] = ("p_t", "p_wilcoxon")) -> pd.DataFrame:
    """Each value of `key` against `reference`, per group of `by`, paired by seed (see the module docstring)."""
    col = _column(results, metric)
    ok = _ok(results)
    rows = []
    for combo, g in _groups(ok, by):
        ref = _by_seed(g[g[key] == reference], col)
        for value in pd.unique(g[key]):
            if value == reference:
                continue
            cur = _by_seed(g[g[key] == value], col)
            rows.append({**combo, key: value, "reference": reference, "metric": col,
                         **paired_row(cur, ref, col)})
    out = pd.DataFrame(rows)
    return add_holm(out, holm_columns) if len(out) else out


def add_holm(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy with `<column>_holm` beside each p-value column: Holm across ALL their p-values together."""
    out = frame.copy()
    cols = [c for c in columns if c in out.columns]
    if not cols:
        return out
    flat = np.concatenate([pd.to_numeric(out[c], errors="coerce").to_numpy("float64") for c in cols])
    adjusted = holm(flat)
    for i, c in enumerate(cols):
        out.insert(out.columns.get_loc(c) + 1, f"{c}_holm", adjusted[i * len(out):(i + 1) * len(out)])
    return out


def degradation(results: pd.DataFrame, metric: str, reference: str | None = None, by: Sequence[str] = (),
                key: str = NORM_KEY, batch_key: str = BATCH_KEY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each norm's degradation from its largest batch (metric(b) - metric(b_max), paired by seed), and per
    group the norm x batch interaction test. Returns (per norm and batch size, per group)."""
    col = _column(results, metric)
    ok = _ok(results)
    rows, inter = [], []
    for combo, g in _groups(ok, by):
        sizes = sorted(pd.unique(g[batch_key]), key=float)
        if len(sizes) < 2:
            continue
        largest = sizes[-1]
        norms = list(pd.unique(g[key]))
        for norm in norms:
            big = _by_seed(g[(g[key] == norm) & (g[batch_key] == largest)], col)
            for b in sizes[:-1]:
                small = _by_seed(g[(g[key] == norm) & (g[batch_key] == b)], col)
                row = paired_row(small, big, col)
                rows.append({**combo, key: norm, batch_key: b, "vs_batch": largest, "metric": col,
                             "degradation": row.pop("effect"), **row})
        inter.append({**combo, **_interaction(g, col, key, batch_key, norms, sizes, reference)})
    per = add_holm(pd.DataFrame(rows), ("p_t", "p_wilcoxon")) if rows else pd.DataFrame()
    return per, add_holm(pd.DataFrame(inter), ("p_interaction",)) if inter else pd.DataFrame()


def _interaction(g: pd.DataFrame, col: str, key: str, batch_key: str, norms: list[Any], sizes: list[Any],
                 reference: str | None) -> dict[str, Any]:
    """The two-way repeated-measures interaction test on the seeds that have every (norm, batch) cell."""
    cube = {(n, b): _by_seed(g[(g[key] == n) & (g[batch_key] == b)], col) for n in norms for b in sizes}
    seeds = [s for s in pd.unique(g[SEED_KEY])
             if all(s in v.index and np.isfinite(v[s]) for v in cube.values())]
    y = np.array([[[cube[(n, b)][s] for b in sizes] for n in norms] for s in seeds], dtype="float64")
    res = interaction_anova(y.reshape(len(seeds), len(norms), len(sizes)))
    return {"norms": ", ".join(map(str, norms)), "batch_sizes": ", ".join(map(str, sizes)), "metric": col,
            "n_seeds": res.n, "F": res.statistic, "p_interaction": res.pvalue, "note": res.note,
            **({"reference": reference} if reference is not None else {})}
