"""A sweep report as text: the aggregated table, the paired tests, their notes, and summary.md."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from cryptonorm.evaluate.keys import BATCH_KEY, NORM_KEY
from cryptonorm.evaluate.metrics import label
from cryptonorm.sweeps.results import SUMMARY_METRICS, grid_values, group_keys
from cryptonorm.text import fmt

if TYPE_CHECKING:
    from cryptonorm.sweeps.report import SweepReport


def _f(v: object, digits: int = 4) -> str:
    return fmt(v, f"g{digits}")


def _p(v: object) -> str:
    return fmt(v, "p")


COMPACT = {"bt_sharpe": "sharpe", "bt_total_return": "return"}  # the forecast metrics' labels: the registry's


def _short(col: str) -> str:
    return COMPACT.get(col) or label(col)


def summary_table(rep: SweepReport, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the aggregated table: mean +/- std over seeds, Holm p-values of the primary
    metric vs the reference.

    `compact` (the terminal): the tested metrics and Sharpe, short headers; the full table goes to summary.md.
    """
    keys = group_keys(rep.meta)
    wanted = [*rep.metrics, "bt_sharpe"] if compact else [*rep.metrics, *SUMMARY_METRICS]
    metrics = [m for m in dict.fromkeys(wanted) if f"{m}_mean" in rep.summary.columns]
    pcols = [c for c in ("p_t_holm", "p_wilcoxon_holm", "p_dm_holm") if c in rep.summary.columns]
    scale = {m: _scale(rep.summary[f"{m}_mean"]) if compact else 0 for m in metrics}
    names = [f"{_short(m)}{f' (e{scale[m]})' if scale[m] else ''}" for m in metrics] if compact else metrics
    pnames = {"p_t_holm": "t", "p_wilcoxon_holm": "W", "p_dm_holm": "DM"}
    header = [*(k.split(".")[-1] if compact else k for k in keys), "n", *names,
              *(f"p {pnames[c]} (Holm)" for c in pcols)]
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
        is_ref = NORM_KEY in r and r[NORM_KEY] == rep.reference
        cells += ["ref" if is_ref else _p(r.get(c)) for c in pcols]
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
    """Header and rows of the paired comparisons: effect with its bootstrap 95% CI, then each test's raw
    and Holm-corrected p-value (`compact`: short headers, notes left to test_notes)."""
    if not len(rep.tests):
        return [], []
    keys = [k for k in group_keys(rep.meta) if k != NORM_KEY]
    header = [*(k.split(".")[-1] if compact else k for k in keys), "norm" if compact else NORM_KEY, "vs", "metric",
              "seeds", "Δ [95% CI]", "better", "p t", "Holm", "p W", "Holm", "DM seeds -/+", "p DM", "Holm",
              *([] if compact else ["rel Δ", "bars", "note"])]
    rows = []
    for _, r in rep.tests.iterrows():
        ci = f"{_f(r['effect'], 3)} [{_f(r['ci_low'], 2)}, {_f(r['ci_high'], 2)}]"
        rows.append([*(str(r[k]) for k in keys), str(r[NORM_KEY]), str(r["reference"]), _short(str(r["metric"])),
                     str(r["n_seeds"]), ci, str(r.get("better") or "-"), _p(r["p_t"]), _p(r["p_t_holm"]),
                     _p(r["p_wilcoxon"]), _p(r["p_wilcoxon_holm"]), str(r.get("dm_seeds", "-")),
                     _p(r.get("p_dm")), _p(r.get("p_dm_holm")),
                     *([] if compact else [fmt(r.get("effect_rel"), "spct"), _f(r.get("dm_bars"), 6),
                                           str(r["note"])])])
    return header, rows


def degradation_table(rep: SweepReport) -> tuple[list[str], list[list[str]]]:
    """Each norm's loss at a batch size minus at its largest batch, paired by seed (Holm within the table)."""
    d = rep.degradation
    if not len(d):
        return [], []
    keys = [k for k in group_keys(rep.meta) if k not in (NORM_KEY, BATCH_KEY)]
    header = [*keys, NORM_KEY, BATCH_KEY, "vs batch", "seeds", f"Δ {_short(rep.loss)} [95% CI]", "rel Δ", "p t",
              "Holm", "p W", "Holm"]
    rows = [[*(str(r[k]) for k in keys), str(r[NORM_KEY]), str(r[BATCH_KEY]), str(r["vs_batch"]), str(r["n_seeds"]),
             f"{_f(r['degradation'], 3)} [{_f(r['ci_low'], 2)}, {_f(r['ci_high'], 2)}]",
             fmt(r["effect_rel"], "spct"), _p(r["p_t"]), _p(r["p_t_holm"]), _p(r["p_wilcoxon"]),
             _p(r["p_wilcoxon_holm"])] for _, r in d.iterrows()]
    return header, rows


def interaction_table(rep: SweepReport) -> tuple[list[str], list[list[str]]]:
    """The norm x batch-size interaction test per group (two-way repeated-measures ANOVA over seeds)."""
    d = rep.interaction
    if not len(d):
        return [], []
    keys = [k for k in group_keys(rep.meta) if k not in (NORM_KEY, BATCH_KEY)]
    header = [*keys, "norms", "batch sizes", "seeds", "F", "p", "Holm", "note"]
    rows = [[*(str(r[k]) for k in keys), str(r["norms"]), str(r["batch_sizes"]), str(r["n_seeds"]), _f(r["F"], 3),
             _p(r["p_interaction"]), _p(r["p_interaction_holm"]), str(r["note"])] for _, r in d.iterrows()]
    return header, rows


def min_p_line(rep: SweepReport) -> str:
    """The smallest p-value each test could reach with the seeds this sweep has."""
    n = rep.min_p
    seeds = int(rep.results.loc[rep.results["status"] == "ok", "seed"].nunique()) if len(rep.results) else 0
    return (f"smallest reachable p with {seeds} seed(s): Wilcoxon {_p(n.get('wilcoxon'))}, DM sign test over seeds "
            f"{_p(n.get('dm_sign'))}, t-test no floor (assumes normal differences); Holm then multiplies the "
            "smallest p of a table by its number of p-values")


def test_notes(rep: SweepReport) -> list[str]:
    """'<norm> vs <reference> [key=value ...] metric: why a test is NaN', for the rows that have one."""
    if not len(rep.tests):
        return []
    keys = [k for k in group_keys(rep.meta) if k != NORM_KEY]
    out = []
    for _, r in rep.tests.iterrows():
        if r["note"]:
            where = " ".join(f"{k}={r[k]}" for k in keys)
            out.append(f"{r[NORM_KEY]} vs {r['reference']}{f' [{where}]' if where else ''} {_short(str(r['metric']))}: "
                       f"{r['note']}")
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
    data = m.data
    out = [f"# Sweep `{m.name}`", ""]
    if m.description:
        out += [m.description, ""]
    grid = ", ".join(f"`{k}` ∈ {{{', '.join(grid_values(m, k))}}}" for k in m.grid)
    zipped = " × ".join(f"`{k}`" for k in m.zip)
    if zipped:
        grid += f"; zipped (moving together): {zipped} = " + ", ".join(
            "(" + ", ".join(str(v) for v in row) + ")" for row in zip(*m.zip.values(), strict=True))
    out += [f"- sweep file: `{m.sweep_file}`, base config: `{m.base}`",
            f"- grid: {grid}",
            f"- fixed: {', '.join(f'`{k}={v}`' for k, v in m.set.items()) or '-'}"
            + (f"; --set {' '.join(m.cli_set)}" if m.cli_set else ""),
            f"- cells: {c['cells']} ({c['ok']} ok, {c['failed']} failed, {c['pending']} pending)",
            f"- data: {data.rows} candles from `{data.path}`, hash `{data.hash}` "
            "(the same for every cell)",
            f"- target: {m.target}, horizon {m.horizon}"]
    tp = rep.throughput
    if tp.get("cells_per_hour") is not None:
        devs = ", ".join(f"{d} x{n}" for d, n in sorted(tp["devices"].items()))
        out.append(f"- throughput: {tp['cells_per_hour']:g} cells/hour over {tp['cells']} finished cells "
                   f"(first start to last finish); devices: {devs}")
    out += [f"- metrics tested: {', '.join(_short(x) for x in rep.metrics)} (primary: {_short(rep.loss)})",
            f"- {min_p_line(rep)}", ""]
    header, rows = summary_table(rep)
    out += ["## Mean ± std over seeds", ""]
    if rep.reference:
        out += [f"p-values (Holm-corrected across the comparisons table): each `{NORM_KEY}` against "
                f"`{rep.reference}` on {_short(rep.loss)} over the same seeds.", ""]
    out += [_md_table(header, rows), ""]
    th, tr = tests_table(rep)
    if tr:
        out += ["## Paired comparisons", "",
                "Δ = norm − reference (or baseline), mean over seeds paired by seed, with a percentile bootstrap "
                "95% CI; `better` reads Δ through the metric (lower is better for losses, higher for IC/AUC). "
                "t: paired t-test; W: Wilcoxon signed-rank; DM: one Diebold-Mariano test per seed on the per-bar "
                "test losses (Newey-West variance, HLN correction), `-/+` = seeds where the norm's loss is "
                "lower/higher (in brackets: significant at 5%), p DM = two-sided sign test over seeds. Holm: "
                "step-down correction across every p-value of this table.", "", _md_table(th, tr), ""]
    for title, (h, rr) in (("Degradation from the largest batch", degradation_table(rep)),
                           ("Norm x batch size interaction (two-way repeated-measures ANOVA, seeds as subjects)",
                            interaction_table(rep))):
        if rr:
            out += [f"## {title}", "", _md_table(h, rr), ""]
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

