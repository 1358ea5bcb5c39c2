"""A sweep's outputs from its report data: sweep_results.csv, summary.md, plots/*.png and report.html.

report.py builds the data (`SweepReport`) and writes nothing; this module calls the writers (summary.py,
plots.py, html.py), so report, summary, plots and html import one way only.
"""

from __future__ import annotations

from pathlib import Path

from cryptonorm.errors import DataError
from cryptonorm.sweeps.report import SweepReport, build_report
from cryptonorm.sweeps.results import RESULT_FILE, collect_results, damaged_cells, write_results_csv

SUMMARY_MD = "summary.md"


def check_cells(sweep_dir: Path) -> None:
    """DataError naming the damaged cells (result.json unreadable, not JSON, no status) and why; nothing is
    written, so sweep_results.csv keeps the figures it had."""
    bad = damaged_cells(sweep_dir)
    if bad:
        shown = "; ".join(f"cells/{cid}/{RESULT_FILE}: {why}" for cid, why in list(bad.items())[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(f"{len(bad)} cell(s) of {sweep_dir} are damaged: {shown}{more}; nothing was rewritten: run "
                        "the sweep again to re-run those cells, or restore their result.json")


def render(sweep_dir: Path, reference: str | None = None, fmt: str | None = None,
           js_dir: Path | None = None) -> SweepReport:
    """Re-read every cell's result; write sweep_results.csv, summary.md, and per `fmt` (png | html | both;
    None: both when plotly is installed, else png) plots/*.png and report.html (no training). `js_dir`: the
    folder above that holds the tree's one plotly.min.js (a study's folder), default beside report.html."""
    from cryptonorm.render.html import formats
    from cryptonorm.sweeps.plots import plot_batch_size, plot_box, plot_curves, x_key

    sweep_dir = Path(sweep_dir)
    want = formats(fmt)  # a bad --format is an error before anything is written
    check_cells(sweep_dir)  # a damaged verdict would turn into "pending" and replace the results table
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
    from cryptonorm.atomic import write_text_atomic
    from cryptonorm.sweeps.summary import markdown

    rep.paths["summary"] = sweep_dir / SUMMARY_MD
    write_text_atomic(rep.paths["summary"], markdown(rep))
    if "html" in want:
        from cryptonorm.sweeps.html import write_html

        rep.paths["html"] = write_html(rep, sweep_dir, js_dir)
    return rep
