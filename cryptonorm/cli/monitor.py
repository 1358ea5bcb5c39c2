"""`monitor`: a drift alarm for a saved run on new candles (exit 3 when it crosses --fail-above)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cryptonorm.cli.app import app, errors, say

ALARM_EXIT = 3  # `--fail-above` crossed: distinct from 1 (runtime error) and 2 (usage), for a cron job


@app.command()
def monitor(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `cryptonorm train`.")],
    data_file: Annotated[Path, typer.Option("--data", help="Candle file to watch (CSV/parquet), the run's "
                                                           "timeframe.")],
    window: Annotated[int, typer.Option("--window", help="Windows (bars) each statistic is taken over.")] = 168,
    fail_above: Annotated[Optional[float], typer.Option("--fail-above", help="Exit 3 when the alarm at the "  # noqa: UP045
                                                        "last bar is above this.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default "  # noqa: UP045
                                                "RUN_DIR/monitor).")] = None,
) -> None:
    """Per bar, how far the inputs have drifted from training: BatchNorm statistics and input PSI/KS;
    writes monitor.csv and monitor.html."""
    from cryptonorm.pipeline.monitoring import monitor as run_monitor

    with errors():
        res = run_monitor(run_dir, data_file, window, out)
        for note in res.notes:
            say(f"note: {note}")
        say(f"wrote {len(res.frame)} bars to {res.csv}" + (f" and {res.html}" if res.html else ""))
        say(f"alarm ({res.signal}) at the last bar: {res.latest:.4g}")
    if fail_above is not None and res.latest > fail_above:
        typer.echo(f"alarm {res.latest:.4g} is above --fail-above {fail_above:g}", err=True)
        raise typer.Exit(ALARM_EXIT)
