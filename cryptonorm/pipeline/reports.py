"""The backtest step's pictures: RUN_DIR/backtest/equity.png (matplotlib) and report.html (interactive).

Which ones: `fmt` png | html | both (None: both when plotly is installed, else png alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryptonorm.render.html import PLOTLY_JS

REPORT_HTML = "report.html"
EQUITY_PNG = "equity.png"
REPORT_FILES = (REPORT_HTML, EQUITY_PNG, PLOTLY_JS)  # every file the reports write


def write_backtest_reports(out_dir: Path, result: Any, title: str, want: tuple[str, ...],
                           outcome: np.ndarray | None = None, importance: Any = None) -> dict[str, Path]:
    """Write the formats in `want` for a Backtest `result` into `out_dir`; returns {format: path}.
    `importance`: a tabular run's importance.csv as a frame, shown in report.html."""
    written: dict[str, Path] = {}
    if "png" in want:
        from cryptonorm.render.plots import plot_equity

        written["png"] = plot_equity(result.equity, result.metrics, Path(out_dir) / EQUITY_PNG, title=title)
    if "html" in want:
        from cryptonorm.render.html_backtest import backtest_page

        written["html"] = backtest_page(Path(out_dir) / REPORT_HTML, result.equity, result.trades, result.metrics,
                                        title=title, outcome=outcome, importance=importance)
    return written


def write_no_backtest_report(out_dir: Path, title: str, reason: str, want: tuple[str, ...]) -> Path | None:
    """report.html saying why there is no backtest, unless the format is png or a report is already there
    (an earlier backtest's page is never replaced by a notice)."""
    path = Path(out_dir) / REPORT_HTML
    if "html" not in want or path.exists():
        return None
    from cryptonorm.render.html_backtest import backtest_page

    return backtest_page(path, None, None, {}, title=title, reason=reason)
