"""SWEEP_DIR/report.html: a SweepReport turned into the plain data the page builder takes.

The page itself (plotly) is cryptonorm.render.html_sweep; this module only reads what the study has (the
report's frames and tables, each finished cell's history.csv) and hands it over.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cryptonorm.evaluate.keys import BATCH_KEY, KIND_KEY
from cryptonorm.sweeps.results import grid_keys, grid_values, labelled
from cryptonorm.sweeps.summary import degradation_table, interaction_table, summary_table, test_notes, tests_table

if TYPE_CHECKING:
    from cryptonorm.render.html_sweep import SweepPage
    from cryptonorm.sweeps.report import SweepReport

REPORT_HTML = "report.html"


def sweep_page_data(rep: SweepReport) -> SweepPage:
    """The page's data: tables as the summary shows them, cells with shown grid values, histories."""
    from cryptonorm.render.html_sweep import SweepPage, TableData
    from cryptonorm.sweeps.plots import x_key

    m, c = rep.meta, rep.counts
    data = m.data
    info = ["grid: " + "; ".join(f"{k} ∈ {{{', '.join(grid_values(m, k))}}}" for k in m.grid),
            f"cells: {c['cells']} ({c['ok']} ok, {c['failed']} failed, {c['pending']} pending)",
            f"data: {data.rows} candles from {data.path}, hash {data.hash} (every cell); "
            f"target {m.target}, horizon {m.horizon}"]
    if m.description:
        info.insert(0, m.description)
    header, rows = summary_table(rep)
    tables = [TableData("Mean ± std over seeds" + (f"; Holm p-values vs {rep.reference} on {rep.loss}"
                                                   if rep.reference else ""), header, rows)]
    th, tr = tests_table(rep)
    if tr:
        tables.append(TableData("Paired comparisons over seeds (Δ = norm − reference or baseline, per metric; "
                                "p raw and Holm-corrected)", th, tr))
    for title, (h, rr) in (("Degradation from the largest batch", degradation_table(rep)),
                           ("Norm x batch size interaction", interaction_table(rep))):
        if rr:
            tables.append(TableData(title, h, rr))
    cells = labelled(rep.results, m) if len(rep.results) else rep.results
    keys = grid_keys(m)
    return SweepPage(title=f"Sweep {m.name}", info=info, tables=tables, cells=cells, grid_keys=keys,
                     group_key=x_key(m), panel_key=KIND_KEY if KIND_KEY in keys else None,
                     metrics=[(rep.loss, rep.loss), ("bt_sharpe", "test-split Sharpe")],
                     curves=histories(cells), batch_key=BATCH_KEY if BATCH_KEY in keys else None,
                     loss=rep.loss, notes=[*test_notes(rep), *rep.notes])


def histories(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """cell_id -> (epoch, val_loss) of each finished cell whose history.csv can be read."""
    out: dict[str, pd.DataFrame] = {}
    if not len(cells):
        return out
    for _, r in cells[cells["status"] == "ok"].iterrows():
        if not isinstance(r.get("run_dir"), str):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):  # a damaged history: that cell has no curve
            h = pd.read_csv(Path(r["run_dir"]) / "history.csv", usecols=["epoch", "val_loss"])
            out[str(r["cell_id"])] = h
    return out


def write_html(rep: SweepReport, sweep_dir: Path, js_dir: Path | None = None) -> Path:
    """Write SWEEP_DIR/report.html (and plotly.min.js beside it, or in `js_dir`: a folder above); returns
    its path."""
    from cryptonorm.render.html_sweep import sweep_page

    return sweep_page(Path(sweep_dir) / REPORT_HTML, sweep_page_data(rep), js_dir)
