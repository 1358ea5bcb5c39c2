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

The engine under both the sweep report and the claims' verdicts (one home for pairing, intervals and Holm):
    match(df, key, treatment, control, on, metric)   the cells of `treatment` beside those of `control`,
        matched on the grid keys `on` (the other keys and the seed): two aligned arrays.
    paired(x, y)   -> Paired: n, means, the mean difference, paired t and Wilcoxon, the Student-t interval
        (agrees with the t-test) and the seeded percentile bootstrap of the mean difference, the smallest
        Wilcoxon p those n pairs can reach.
    spread(x, y)   -> Spread: std(x) / std(y) - 1, its two-group bootstrap interval, Brown-Forsythe.
    holm_within(p, families)   Holm within each family of a table's p-values.

`results` is the sweep's results frame (sweep_results.csv / SweepReport.results): one row per cell with the
grid keys, `seed`, `status` (only "ok" rows count) and metric columns such as test_qlike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryptonorm.evaluate.keys import BATCH_KEY, NORM_KEY, SEED_KEY
from cryptonorm.evaluate.metrics import higher_is_better
from cryptonorm.evaluate.stats import (
    TestResult,
    bootstrap_ci,
    bootstrap_ci_two,
    brown_forsythe,
    holm,
    interaction_anova,
    min_pvalues,
    paired_t,
    paired_wilcoxon,
    t_interval,
)


@dataclass(frozen=True)
class Paired:
    """Paired statistics of x - y over n aligned pairs (see `paired`)."""

    n: int
    mean: float  # of x
    mean_ref: float  # of y
    diff: float  # mean of x - y
    t: TestResult
    wilcoxon: TestResult
    ci_t: tuple[float, float]  # Student-t 95% interval of the mean difference
    ci_boot: tuple[float, float]  # seeded percentile-bootstrap 95% interval of the mean difference
    min_p_wilcoxon: float  # the smallest Wilcoxon p that n pairs can reach

    @property
    def note(self) -> str:
        return "; ".join(n for n in (self.t.note, self.wilcoxon.note) if n)


@dataclass(frozen=True)
class Spread:
    """Unpaired spread of x against y over seeds (see `spread`)."""

    n: int
    std: float  # of x
    std_ref: float  # of y
    effect: float  # std(x) / std(y) - 1
    ci: tuple[float, float]  # two-group percentile bootstrap of the effect
    test: TestResult  # Brown-Forsythe (Levene about the median)


def paired(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Paired:
    """The paired comparison of aligned arrays x (treatment) and y (control or reference), finite pairs."""
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    n = len(x)
    d = x - y
    return Paired(n, float(x.mean()) if n else math.nan, float(y.mean()) if n else math.nan,
                  float(d.mean()) if n else math.nan, paired_t(x, y), paired_wilcoxon(x, y), t_interval(d),
                  bootstrap_ci(d, seed=seed), min_pvalues(n)["wilcoxon"])


def _std_ratio(a: np.ndarray, b: np.ndarray) -> float:
    sb = float(np.std(b, ddof=1))
    return float(np.std(a, ddof=1)) / sb - 1.0 if sb > 0 else math.nan


def spread(x: np.ndarray, y: np.ndarray) -> Spread:
    """The spread over seeds of x against y, unpaired: std ratio - 1, bootstrap CI, Brown-Forsythe test."""
    bf = brown_forsythe(x, y)
    eff = _std_ratio(x, y) if bf.n >= 2 else math.nan
    ci = bootstrap_ci_two(x, y, _std_ratio) if bf.n >= 2 else (math.nan, math.nan)
    return Spread(bf.n, float(np.std(x, ddof=1)) if len(x) > 1 else math.nan,
                  float(np.std(y, ddof=1)) if len(y) > 1 else math.nan, eff, ci, bf)


def match(df: pd.DataFrame, key: str, treatment: object, control: object, on: Sequence[str],
          metric: str) -> tuple[np.ndarray, np.ndarray]:
    """`metric` of the cells whose `key` is `treatment` beside those whose `key` is `control`, matched on the
    grid keys `on` (every other grid key and the seed), both finite. control None: the treatment against 0."""
    t = df[df[key] == treatment].set_index(list(on))[metric]
    if control is None:
        v = pd.to_numeric(t, errors="coerce").dropna().to_numpy("float64")
        return v, np.zeros_like(v)
    c = df[df[key] == control].set_index(list(on))[metric]
    both = pd.concat([t.rename("t"), c.rename("c")], axis=1, join="inner").apply(pd.to_numeric, errors="coerce")
    both = both.dropna()
    return both["t"].to_numpy("float64"), both["c"].to_numpy("float64")


def holm_within(p: np.ndarray, families: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, each family (e.g. a claim's primary and secondary comparisons) on its own."""
    p = np.asarray(p, dtype="float64")
    out = np.full(len(p), math.nan)
    for fam in pd.unique(families):
        mask = np.asarray(families == fam)
        out[mask] = holm(p[mask])
    return out


def _column(df: pd.DataFrame, metric: str) -> str:
    col = metric if metric in df.columns else f"test_{metric}"
    if col not in df.columns:
        raise KeyError(f"no cell has the metric {metric!r}")
    return col


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def _groups(df: pd.DataFrame, by: Sequence[str]) -> list[tuple[dict[str, object], pd.DataFrame]]:
    if not by:
        return [({}, df)]
    return [(dict(zip(by, k if isinstance(k, tuple) else (k,), strict=True)), g)
            for k, g in df.groupby(list(by), sort=False, dropna=False)]


def _by_seed(df: pd.DataFrame, col: str) -> pd.Series:
    s = pd.to_numeric(df.set_index(SEED_KEY)[col], errors="coerce")
    return s[~s.index.duplicated()]


def paired_row(a: pd.Series, b: pd.Series, metric: str, seed: int = 0) -> dict[str, float | int | str]:
    """Effect, bootstrap CI and paired tests of a - b over the seeds both have (Series indexed by seed)."""
    common = [s for s in a.index if s in b.index and np.isfinite(a[s]) and np.isfinite(b[s])]
    r = paired(a[common].to_numpy("float64"), b[common].to_numpy("float64"), seed=seed)
    effect, mean_ref = r.diff, r.mean_ref
    direction = higher_is_better(metric)
    better = "" if direction is None or not np.isfinite(effect) or effect == 0 else \
        ("yes" if (effect > 0) == direction else "no")
    return {"n_seeds": r.n, "mean": r.mean, "mean_ref": mean_ref,
            "effect": effect, "ci_low": r.ci_boot[0], "ci_high": r.ci_boot[1],
            "effect_rel": effect / abs(mean_ref) if mean_ref not in (0.0,) and np.isfinite(mean_ref) else math.nan,
            "better": better, "t": r.t.statistic, "p_t": r.t.pvalue, "wilcoxon": r.wilcoxon.statistic,
            "p_wilcoxon": r.wilcoxon.pvalue, "min_p_wilcoxon": r.min_p_wilcoxon, "note": r.note}


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


def _interaction(g: pd.DataFrame, col: str, key: str, batch_key: str, norms: list[object], sizes: list[object],
                 reference: str | None) -> dict[str, object]:
    """The two-way repeated-measures interaction test on the seeds that have every (norm, batch) cell."""
    cube = {(n, b): _by_seed(g[(g[key] == n) & (g[batch_key] == b)], col) for n in norms for b in sizes}
    seeds = [s for s in pd.unique(g[SEED_KEY])
             if all(s in v.index and np.isfinite(v[s]) for v in cube.values())]
    y = np.array([[[cube[(n, b)][s] for b in sizes] for n in norms] for s in seeds], dtype="float64")
    res = interaction_anova(y.reshape(len(seeds), len(norms), len(sizes)))
    return {"norms": ", ".join(map(str, norms)), "batch_sizes": ", ".join(map(str, sizes)), "metric": col,
            "n_seeds": res.n, "F": res.statistic, "p_interaction": res.pvalue, "note": res.note,
            **({"reference": reference} if reference is not None else {})}
