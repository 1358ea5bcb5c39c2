"""`fetch`, `features` and `audit`: candles into the store, the feature table, the look-ahead audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cryptonorm.cli.app import (
    STATE,
    ConfigArg,
    SetOpt,
    app,
    console,
    errors,
    load_cli_config,
    say,
)

# ---------------------------------------------------------------- fetch


@app.command()
def fetch(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Experiment config.")] = None,  # noqa: UP045
    exchange: Annotated[Optional[str], typer.Option(help="ccxt exchange id, or 'synthetic'.")] = None,  # noqa: UP045
    symbol: Annotated[Optional[list[str]], typer.Option(help="Market, e.g. BTC/USDT (repeatable).")] = None,  # noqa: UP045
    timeframe: Annotated[Optional[str], typer.Option(help="Candle timeframe, e.g. 1h.")] = None,  # noqa: UP045
    since: Annotated[Optional[str], typer.Option(help="First candle (ISO date).")] = None,  # noqa: UP045
    until: Annotated[Optional[str], typer.Option(help="End, exclusive (ISO date); default now.")] = None,  # noqa: UP045
    data_dir: Annotated[Optional[Path], typer.Option(help="Candle store folder.")] = None,  # noqa: UP045
    gaps: Annotated[bool, typer.Option("--gaps", help="List every gap found.")] = False,
    set_: SetOpt = None,
) -> None:
    """Download OHLCV candles into the local parquet store (incremental, resumable)."""
    from cryptonorm import pipeline
    from cryptonorm.render import tables

    with errors():
        sym: Any = symbol[0] if symbol and len(symbol) == 1 else symbol
        cfg = load_cli_config(config, set_, **{"data.exchange": exchange, "data.symbol": sym,
                                               "data.timeframe": timeframe, "data.since": since, "data.until": until,
                                               "data.dir": str(data_dir) if data_dir else None})
        with tables.progress_bar("candles", disable=STATE.quiet) as update:
            summaries = pipeline.fetch(cfg, progress=update)
        if not STATE.quiet:
            console().print(tables.fetch_table(summaries))
            if gaps:
                console().print(tables.gaps_table(summaries))
        for s in [x for summary in summaries for x in (summary, summary.funding) if x is not None]:
            if s.set_aside_note:  # rows a fetch could not store: said even with --quiet
                typer.echo(s.set_aside_note, err=True)


# ---------------------------------------------------------------- features and audit


@app.command()
def features(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file, .parquet or .csv.")],
    set_: SetOpt = None,
) -> None:
    """Write the raw (unscaled) feature table to a file."""
    from cryptonorm import pipeline

    with errors():
        path, rows, cols = pipeline.features(load_cli_config(config, set_), out)
        say(f"wrote {rows} rows x {cols} columns to {path}")


@app.command()
def audit(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check for look-ahead: features, scaled inputs and labels must not change when the future is cut."""
    from cryptonorm import pipeline
    from cryptonorm.render import tables

    with errors():
        result = pipeline.audit(load_cli_config(config, set_))
        ok = tables.render_audit(console(), result, quiet=STATE.quiet)
        if not ok:
            raise typer.Exit(1)

