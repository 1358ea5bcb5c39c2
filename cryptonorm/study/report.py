"""What a sweep found: tables as data and Markdown, significance tests, PNG plots (no rich, no training).

Aggregation: mean and std over seeds for every combination of the other grid keys.
Significance (when `model.norm` is a grid key): for each combination of the keys other than the norm and
the seed, each norm against a reference norm, paired by seed:
  - paired t-test and Wilcoxon signed-rank test on the test loss (test MSE; log-loss for direction
    targets) of the cells that share a seed;
  - Diebold-Mariano on the test bars both runs forecast: d_t = e_norm,t^2 - e_ref,t^2 (squared forecast
    errors, the mean over seeds of the per-seed differentials), a Newey-West (Bartlett) long-run variance
    with lag horizon - 1, the Harvey-Leybourne-Newbold small-sample correction and a two-sided Student-t
    p-value with T - 1 degrees of freedom. A negative DM statistic means the norm beats the reference.
Undefined tests (fewer than 2 seeds, all differences equal) give NaN and a note instead of a warning.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from cryptonorm.errors import ConfigError
from cryptonorm.render.plots import atomic_savefig
from cryptonorm.study.sweep import _show, collect_results, load_sweep_dir, results_frame, write_results_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NORM_KEY = "model.norm"
KIND_KEY = "model.kind"
SEED_KEY = "seed"
BATCH_KEY = "train.batch_size"
SUMMARY_MD = "summary.md"


# ---------------------------------------------------------------- statistics (pure)


@dataclass(frozen=True)
class TestResult:
    statistic: float
    pvalue: float
    n: int
    note: str = ""


def paired_t(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Paired t-test of a - b (scipy.stats.ttest_rel); NaN with a note when it is undefined."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 2:
        return TestResult(math.nan, math.nan, n, f"t-test needs >= 2 paired seeds, got {n}")
    d = a - b
    if np.all(d == d[0]):
        return TestResult(math.nan, math.nan, n, "t-test undefined: all paired differences are equal")
    r = stats.ttest_rel(a, b)
    return TestResult(float(r.statistic), float(r.pvalue), n)


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Wilcoxon signed-rank test of a - b (zero differences dropped, as scipy's default)."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 2:
        return TestResult(math.nan, math.nan, n, f"Wilcoxon needs >= 2 paired seeds, got {n}")
    if np.all(a == b):
        return TestResult(math.nan, math.nan, n, "Wilcoxon undefined: all paired differences are zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.wilcoxon(a, b)
    return TestResult(float(r.statistic), float(r.pvalue), n)


def diebold_mariano(d: np.ndarray, horizon: int = 1) -> TestResult:
    """Diebold-Mariano test that the loss differential d_t (T,) has mean zero.

    Long-run variance: Newey-West (Bartlett weights 1 - k / (L + 1)) with L = horizon - 1 lags, so
    overlapping h-step forecasts are allowed for. Statistic times the Harvey-Leybourne-Newbold (1997)
    factor sqrt((T + 1 - 2h + h(h - 1) / T) / T); two-sided p-value from Student-t with T - 1 df.
    Identical losses on every bar give statistic NaN and p-value 1 (no evidence of any difference).
    """
    d = np.asarray(d, dtype="float64")
    d = d[np.isfinite(d)]
    T, h = len(d), max(1, int(horizon))
    if T < 2:
        return TestResult(math.nan, math.nan, T, f"DM needs >= 2 common test bars, got {T}")
    if np.all(d == 0):
        return TestResult(math.nan, 1.0, T, "DM: identical losses on every bar")
    u = d - d.mean()
    lags = min(h - 1, T - 1)
    var = float(u @ u) / T
    for k in range(1, lags + 1):
        var += 2.0 * (1.0 - k / (lags + 1)) * float(u[k:] @ u[:-k]) / T
    if not var > 0:
        return TestResult(math.nan, math.nan, T, "DM undefined: the loss differential has no variance")
    dm = float(d.mean()) / math.sqrt(var / T)
    factor = (T + 1 - 2 * h + h * (h - 1) / T) / T
    stat = dm * math.sqrt(factor) if factor > 0 else dm
    return TestResult(stat, float(2.0 * stats.t.sf(abs(stat), df=T - 1)), T)


def loss_differential(errors: list[tuple[pd.DataFrame, pd.DataFrame]]) -> np.ndarray:
    """Mean over seeds of e_a,t^2 - e_b,t^2 on the test bars all pairs forecast.

    Each pair is (forecasts of run a, forecasts of run b): frames with timestamp, forecast, y, split.
    """
    per_seed = []
    for fa, fb in errors:
        m = _test_rows(fa).merge(_test_rows(fb), on="timestamp", suffixes=("_a", "_b"))
        d = (m["forecast_a"] - m["y_a"]) ** 2 - (m["forecast_b"] - m["y_b"]) ** 2
        per_seed.append(pd.Series(d.to_numpy("float64"), index=m["timestamp"].to_numpy()))
    if not per_seed:
        return np.array([], dtype="float64")
    return pd.concat(per_seed, axis=1, join="inner").mean(axis=1).to_numpy("float64")


def _test_rows(f: pd.DataFrame) -> pd.DataFrame:
    t = f[(f["split"] == "test") & f["forecast"].notna() & f["y"].notna()]
    return t[["timestamp", "forecast", "y"]]


# ---------------------------------------------------------------- the report as data


@dataclass
class SweepReport:
    meta: dict[str, Any]
    results: pd.DataFrame  # one row per cell (sweep_results.csv)
    summary: pd.DataFrame  # mean/std over seeds per combination, with the p-values vs the reference
    tests: pd.DataFrame  # one row per (combination, norm != reference)
    loss: str  # the column the tests use: test_mse, or test_log_loss for direction targets
    reference: str | None
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        s = self.results["status"]
        return {"cells": len(s), "ok": int((s == "ok").sum()), "failed": int((s == "failed").sum()),
                "pending": int((s == "pending").sum())}


SUMMARY_METRICS = ("test_mse", "test_mae", "test_directional_accuracy", "test_ic_spearman", "test_log_loss",
                   "test_auc", "bt_sharpe", "bt_total_return", "bt_max_drawdown", "train_seconds")


def _keys(meta: dict[str, Any]) -> list[str]:
    return list(meta["grid"])


def _group_keys(meta: dict[str, Any]) -> list[str]:
    return [k for k in _keys(meta) if k != SEED_KEY]


def _values(meta: dict[str, Any], key: str) -> list[str]:
    return [_show(v) for v in meta["grid"][key]]


def _labelled(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """Grid columns as their shown strings (so 0.1, [64, 32] and 'layer' compare alike)."""
    out = df.copy()
    for k in _keys(meta):
        out[k] = out[k].map(_show)
    return out


def _combos(meta: dict[str, Any], keys: list[str]) -> list[dict[str, str]]:
    import itertools

    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(_values(meta, k) for k in keys))]


def _select(df: pd.DataFrame, combo: dict[str, str]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for k, v in combo.items():
        mask &= df[k] == v
    return df[mask]


def aggregate(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """Mean and std over seeds of each metric, per combination of the other grid keys (grid order)."""
    lab = _labelled(df, meta)
    keys = _group_keys(meta)
    metrics = [m for m in SUMMARY_METRICS if m in lab.columns and lab[m].notna().any()]
    rows = []
    for combo in _combos(meta, keys):
        sel = _select(lab, combo)
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
    norms = _values(meta, NORM_KEY)
    ref = reference if reference is not None else (meta.get("reference") or norms[0])
    if ref not in norms:
        raise ConfigError(f"--reference {ref!r} is not a {NORM_KEY} value of this sweep; choose one of "
                          f"{', '.join(norms)}")
    if len(norms) < 2:
        return pd.DataFrame(), ref, [f"no significance tests: only one {NORM_KEY} value"]
    lab = _labelled(df, meta)
    lab = lab[lab["status"] == "ok"]
    others = [k for k in _group_keys(meta) if k != NORM_KEY]
    horizon = int(meta.get("horizon", 1))
    rows = []
    cache: dict[str, pd.DataFrame | None] = {}
    for combo in _combos(meta, others):
        sel = _select(lab, combo)
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
    df = results_frame(collect_results(sweep_dir), _keys(meta), sweep_dir)
    loss = "test_log_loss" if meta.get("target") == "direction" else "test_mse"
    summary = aggregate(df, meta)
    tests, ref, notes = significance(df, meta, sweep_dir, reference, loss)
    if len(tests):
        keys = [k for k in _group_keys(meta)]
        summary = summary.merge(tests[[*keys, "p_t", "p_wilcoxon", "p_dm"]], on=keys, how="left")
    failed = df[df["status"] == "failed"]
    if len(failed):
        notes.append(f"{len(failed)} cell(s) failed; `cryptonorm sweep` again retries them")
    if SEED_KEY not in meta["grid"]:
        notes.append("seed is not a grid key: one run per combination, no spread and no paired tests over seeds")
    return SweepReport(meta, df, summary, tests, loss, ref, notes)


# ---------------------------------------------------------------- tables as text


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}"
    return str(v)


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


COMPACT = {"test_mse": "test mse", "test_log_loss": "test log loss", "test_directional_accuracy": "dir acc",
           "test_auc": "AUC", "bt_sharpe": "sharpe", "bt_total_return": "return"}


def summary_table(rep: SweepReport, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the aggregated table: mean +/- std over seeds, p-values vs the reference.

    `compact` (the terminal): fewer metrics, short headers; the full table goes to summary.md.
    """
    keys = _group_keys(rep.meta)
    metrics = [m for m in (COMPACT if compact else SUMMARY_METRICS) if f"{m}_mean" in rep.summary.columns]
    has_p = "p_t" in rep.summary.columns
    scale = {m: _scale(rep.summary[f"{m}_mean"]) if compact else 0 for m in metrics}
    names = [f"{COMPACT[m]}{f' (e{scale[m]})' if scale[m] else ''}" for m in metrics] if compact else metrics
    header = [*(k.split(".")[-1] if compact else k for k in keys), "n", *names,
              *(["p t", "p W", "p DM"] if compact and has_p else ["p t-test", "p Wilcoxon", "p DM"] if has_p else [])]
    rows = []
    for _, r in rep.summary.iterrows():
        n = f"{r['n_ok']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "") + \
            (f" ({r['n_pending']} pending)" if r["n_pending"] else "")
        cells = [str(r[k]) for k in keys] + [n]
        for m in metrics:
            mean, std = r[f"{m}_mean"] / 10.0 ** scale[m], r[f"{m}_std"] / 10.0 ** scale[m]
            digits = 3 if compact else 4
            pm = "±" if compact else " ± "
            cells.append(_f(mean, digits) if math.isnan(std) else f"{_f(mean, digits)}{pm}{_f(std, 2)}")
        if has_p:
            is_ref = NORM_KEY in r and r[NORM_KEY] == rep.reference
            cells += ["ref"] * 3 if is_ref else [_p(r.get("p_t")), _p(r.get("p_wilcoxon")), _p(r.get("p_dm"))]
        rows.append(cells)
    return header, rows


def _scale(values: pd.Series) -> int:
    """Power of ten that brings tiny metrics (an MSE of 4e-5) to a readable size in a narrow table."""
    v = pd.to_numeric(values, errors="coerce").abs().dropna()
    v = v[v > 0]
    if not len(v) or v.max() >= 1e-2:
        return 0
    return int(math.floor(math.log10(float(v.max()))))


def tests_table(rep: SweepReport, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired comparisons (`compact`: short headers, notes left to test_notes)."""
    if not len(rep.tests):
        return [], []
    keys = [k for k in _group_keys(rep.meta) if k != NORM_KEY]
    header = [*(k.split(".")[-1] if compact else k for k in keys), "norm" if compact else NORM_KEY, "seeds",
              f"mean Δ {rep.loss}", "t", "p", "W", "p", "DM", "p", "bars", *([] if compact else ["note"])]
    rows = []
    for _, r in rep.tests.iterrows():
        rows.append([*(str(r[k]) for k in keys), str(r[NORM_KEY]), str(r["n_seeds"]), _f(r["mean_diff"], 3),
                     _f(r["t"], 3), _p(r["p_t"]), _f(r["wilcoxon"], 3), _p(r["p_wilcoxon"]), _f(r["dm"], 3),
                     _p(r["p_dm"]), str(r["dm_bars"]), *([] if compact else [str(r["note"])])])
    return header, rows


def test_notes(rep: SweepReport) -> list[str]:
    """'<norm> vs <reference> [key=value ...]: why a test is NaN', for the rows that have one."""
    if not len(rep.tests):
        return []
    keys = [k for k in _group_keys(rep.meta) if k != NORM_KEY]
    out = []
    for _, r in rep.tests.iterrows():
        if r["note"]:
            where = " ".join(f"{k}={r[k]}" for k in keys)
            out.append(f"{r[NORM_KEY]} vs {rep.reference}{f' [{where}]' if where else ''}: {r['note']}")
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(rep: SweepReport) -> str:
    """summary.md: the sweep, the aggregated table, the paired tests, failures, plots."""
    m, c = rep.meta, rep.counts
    data = m.get("data", {})
    out = [f"# Sweep `{m['name']}`", ""]
    if m.get("description"):
        out += [m["description"], ""]
    grid = ", ".join(f"`{k}` ∈ {{{', '.join(_values(m, k))}}}" for k in m["grid"])
    out += [f"- sweep file: `{m.get('sweep_file')}`, base config: `{m.get('base')}`",
            f"- grid: {grid}",
            f"- fixed: {', '.join(f'`{k}={v}`' for k, v in (m.get('set') or {}).items()) or '-'}"
            + (f"; --set {' '.join(m['cli_set'])}" if m.get("cli_set") else ""),
            f"- cells: {c['cells']} ({c['ok']} ok, {c['failed']} failed, {c['pending']} pending)",
            f"- data: {data.get('rows')} candles from `{data.get('path')}`, hash `{data.get('hash')}` "
            "(the same for every cell)",
            f"- target: {m.get('target')}, horizon {m.get('horizon')}", ""]
    header, rows = summary_table(rep)
    out += ["## Mean ± std over seeds", ""]
    if rep.reference:
        out += [f"p-values: each `{NORM_KEY}` against `{rep.reference}` on {rep.loss} over the same seeds "
                "(paired t-test, Wilcoxon signed-rank) and Diebold-Mariano on the per-bar squared test errors "
                "(averaged over seeds; Newey-West variance, HLN correction).", ""]
    out += [_md_table(header, rows), ""]
    th, tr = tests_table(rep)
    if tr:
        out += [f"## Paired comparisons vs `{rep.reference}`", "",
                f"Δ = norm − reference on {rep.loss} (negative: the norm forecasts better); DM < 0 likewise.", "",
                _md_table(th, tr), ""]
    failed = rep.results[rep.results["status"] == "failed"]
    if len(failed):
        out += ["## Failed cells", ""]
        out += [f"- `{r['cell_id']}`: {r['error']}" for _, r in failed.iterrows()]
        out.append("")
    if rep.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    if rep.plots:
        out += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in rep.plots] + [""]
    return "\n".join(out)


# ---------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> Path:
    """PNG written atomically: never a half-written image."""
    return atomic_savefig(fig, path, format="png", dpi=110)


def _panels(meta: dict[str, Any]) -> list[str | None]:
    return list(_values(meta, KIND_KEY)) if KIND_KEY in meta["grid"] else [None]


def _x_key(meta: dict[str, Any]) -> str | None:
    """What the boxes are grouped by: the norm, else the first other grid key."""
    if NORM_KEY in meta["grid"]:
        return NORM_KEY
    rest = [k for k in _group_keys(meta) if k != KIND_KEY]
    return rest[0] if rest else None


def _figure(n_panels: int) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 4.8 * n_panels), 4.2), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _pooled(meta: dict[str, Any], used: set[str]) -> str:
    rest = [k for k in meta["grid"] if k not in used]
    return f" (pooled over {', '.join(rest)})" if rest else ""


def plot_box(rep: SweepReport, metric: str, title: str, path: Path) -> Path | None:
    """Box plot of `metric` over seeds (and other keys) per norm, one panel per model kind."""
    meta = rep.meta
    x = _x_key(meta)
    if metric not in rep.results.columns:
        return None
    lab = _labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    groups = _values(meta, x) if x else ["all"]
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
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta["name"])
        ax.grid(alpha=0.3)
    fig.suptitle(title + _pooled(meta, {x or "", KIND_KEY, SEED_KEY}))
    return _save(fig, path)


def plot_batch_size(rep: SweepReport, path: Path) -> Path | None:
    """Test loss vs batch size (log x), one line per norm with std over seeds; only with a batch-size grid."""
    meta = rep.meta
    if BATCH_KEY not in meta["grid"] or rep.loss not in rep.results.columns:
        return None
    lab = _labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    sizes = _values(meta, BATCH_KEY)
    norms = _values(meta, NORM_KEY) if NORM_KEY in meta["grid"] else [None]
    for ax, kind in zip(axes, panels, strict=True):
        sel = lab if kind is None else lab[lab[KIND_KEY] == kind]
        for norm in norms:
            s = sel if norm is None else sel[sel[NORM_KEY] == norm]
            xs, mean, std = [], [], []
            for b in sizes:
                v = pd.to_numeric(s[s[BATCH_KEY] == b][rep.loss], errors="coerce").dropna()
                if len(v):
                    xs.append(float(b))
                    mean.append(float(v.mean()))
                    std.append(float(v.std(ddof=1)) if len(v) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=norm or "all")
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(b) for b in sizes], sizes)
        ax.set_xlabel(BATCH_KEY)
        ax.set_ylabel(f"{rep.loss} (mean ± std over seeds)")
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta["name"])
        ax.grid(alpha=0.3)
        ax.legend(title=NORM_KEY if NORM_KEY in meta["grid"] else None, fontsize=8)
    fig.suptitle(f"test loss vs batch size{_pooled(meta, {BATCH_KEY, NORM_KEY, KIND_KEY, SEED_KEY})}")
    return _save(fig, path)


def plot_curves(rep: SweepReport, path: Path) -> Path | None:
    """Mean validation loss per epoch over seeds, one line per norm, one panel per model kind."""
    meta = rep.meta
    x = _x_key(meta)
    lab = _labelled(rep.results, meta)
    lab = lab[lab["status"] == "ok"]
    if not len(lab):
        return None
    panels = _panels(meta)
    fig, axes = _figure(len(panels))
    any_line = False
    for ax, kind in zip(axes, panels, strict=True):
        sel = lab if kind is None else lab[lab[KIND_KEY] == kind]
        for g in _values(meta, x) if x else [None]:
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
        ax.set_title(f"{KIND_KEY}={kind}" if kind is not None else meta["name"])
        ax.grid(alpha=0.3)
        if any_line:
            ax.legend(title=x, fontsize=8)
    fig.suptitle("training curves" + _pooled(meta, {x or "", KIND_KEY, SEED_KEY}))
    return _save(fig, path) if any_line else None


def render(sweep_dir: Path, reference: str | None = None) -> SweepReport:
    """Re-read every cell's result; write sweep_results.csv, plots/*.png and summary.md (no training)."""
    sweep_dir = Path(sweep_dir)
    rep = build_report(sweep_dir, reference)
    rep.paths["results"] = write_results_csv(sweep_dir, collect_results(sweep_dir))
    plots = sweep_dir / "plots"
    made = [
        plot_box(rep, rep.loss, f"{rep.loss} by {_x_key(rep.meta) or 'cell'}", plots / "test_loss_by_norm.png"),
        plot_box(rep, "bt_sharpe", f"test-split Sharpe by {_x_key(rep.meta) or 'cell'}", plots / "sharpe_by_norm.png"),
        plot_batch_size(rep, plots / "test_loss_vs_batch_size.png"),
        plot_curves(rep, plots / "training_curves.png"),
    ]
    rep.plots = [p for p in made if p is not None]
    from cryptonorm.pipeline import write_text_atomic

    rep.paths["summary"] = sweep_dir / SUMMARY_MD
    write_text_atomic(rep.paths["summary"], markdown(rep))
    rep.paths["plots"] = plots
    return rep
