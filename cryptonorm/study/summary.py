"""A sweep report as text: the aggregated table, the paired tests, their notes, and summary.md."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from cryptonorm.study.results import NORM_KEY, SUMMARY_METRICS, grid_values, group_keys
from cryptonorm.text import fmt

if TYPE_CHECKING:
    from cryptonorm.study.report import SweepReport


def _f(v: Any, digits: int = 4) -> str:
    return fmt(v, f"g{digits}")


def _p(v: Any) -> str:
    return fmt(v, "p")


COMPACT = {"test_mse": "test mse", "test_log_loss": "test log loss", "test_directional_accuracy": "dir acc",
           "test_auc": "AUC", "bt_sharpe": "sharpe", "bt_total_return": "return"}


def summary_table(rep: SweepReport, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the aggregated table: mean +/- std over seeds, p-values vs the reference.

    `compact` (the terminal): fewer metrics, short headers; the full table goes to summary.md.
    """
    keys = group_keys(rep.meta)
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
    keys = [k for k in group_keys(rep.meta) if k != NORM_KEY]
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
    keys = [k for k in group_keys(rep.meta) if k != NORM_KEY]
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
    grid = ", ".join(f"`{k}` ∈ {{{', '.join(grid_values(m, k))}}}" for k in m["grid"])
    out += [f"- sweep file: `{m.get('sweep_file')}`, base config: `{m.get('base')}`",
            f"- grid: {grid}",
            f"- fixed: {', '.join(f'`{k}={v}`' for k, v in (m.get('set') or {}).items()) or '-'}"
            + (f"; --set {' '.join(m['cli_set'])}" if m.get("cli_set") else ""),
            f"- cells: {c['cells']} ({c['ok']} ok, {c['failed']} failed, {c['pending']} pending)",
            f"- data: {data.get('rows')} candles from `{data.get('path')}`, hash `{data.get('hash')}` "
            "(the same for every cell)",
            f"- target: {m.get('target')}, horizon {m.get('horizon')}"]
    tp = rep.throughput
    if tp.get("cells_per_hour") is not None:
        devs = ", ".join(f"{d} x{n}" for d, n in sorted(tp["devices"].items()))
        out.append(f"- throughput: {tp['cells_per_hour']:g} cells/hour over {tp['cells']} finished cells "
                   f"(first start to last finish); devices: {devs}")
    out.append("")
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

