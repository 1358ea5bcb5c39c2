"""`export` (a run's model as ONNX) and `runs` (a table of run directories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cryptonorm.cli.app import STATE, JsonOpt, SetOpt, app, console, errors, load_cli_config, say
from cryptonorm.errors import UsageError


@app.command()
def export(
    target: Annotated[Path, typer.Argument(help="A finished run directory (--onnx), or a run directory or config "
                                                "whose data section names the candles (--freqtrade).",
                                           show_default=False)],
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Output ONNX file (raw features in, forecast "  # noqa: UP045
                                                                "out).", show_default=False)] = None,
    freqtrade: Annotated[Optional[Path], typer.Option("--freqtrade", help="Write the candles in freqtrade's "  # noqa: UP045
                                                      "layout into this folder (its user_data/data/<exchange>).",
                                                      show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="freqtrade data format: feather, parquet, json, jsongz.")]
        = "feather",
    set_: SetOpt = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Candle store folder (--freqtrade; "  # noqa: UP045
                                                     "default: the config's data.dir).")] = None,
) -> None:
    """Export a run's model as ONNX (scaler folded in), or the store's candles for freqtrade (merged with what
    the folder already holds: a longer history there is kept)."""
    from cryptonorm import pipeline
    from cryptonorm.pipeline.export import export_freqtrade, export_onnx

    with errors():
        if (onnx is None) == (freqtrade is None):
            raise UsageError("give exactly one of --onnx FILE or --freqtrade DIR")
        if freqtrade is not None:
            if pipeline.is_run_dir(target):
                cfg = pipeline.load_run_config(target)
                if data_dir is not None:
                    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": str(data_dir)})})
            else:
                cfg = load_cli_config(target, set_, **{"data.dir": str(data_dir) if data_dir else None})
            for path in export_freqtrade(cfg, freqtrade, fmt):
                typer.echo(str(path))
            return
        assert onnx is not None
        summary = export_onnx(target, onnx)
        say(f"input 'features': (batch, {summary.window}, {len(summary.features)}) float32 raw values of "
            f"{', '.join(summary.features)}; output 'forecast': (batch,) {summary.target}")
        typer.echo(str(summary.path))


@app.command("runs")
def runs_command(
    root: Annotated[Path, typer.Argument(help="A folder of run directories.")] = Path("runs"),
    json_: JsonOpt = False,
) -> None:
    """List run directories: name, date, model, norm, target, test metrics, Sharpe, finished or not."""
    from cryptonorm.atomic import json_safe
    from cryptonorm.pipeline.listing import list_runs
    from cryptonorm.render import tables
    from cryptonorm.text import fmt

    with errors():
        rows = list_runs(root)
        if json_:
            typer.echo(json.dumps(json_safe(rows)))
            return
        header = ["run", "created", "model", "norm", "target", "test dir. acc.", "test IC", "Sharpe", "B&H Sharpe",
                  "finished"]
        body = [[r["name"], r["created"][:16].replace("T", " "), r["model"] or "?", r["norm"] or "?",
                 r["target"] or "?", fmt(r["test"].get("directional_accuracy"), "pct"),
                 fmt(r["test"].get("ic_spearman"), "num3"), fmt(r["sharpe"], "num"),
                 fmt(r["buy_and_hold_sharpe"], "num"),
                 "damaged" if r["damaged"] else "yes" if r["finished"] else "no"] for r in rows]
        if not STATE.quiet:
            console(wide=True).print(tables.simple_table(f"{len(rows)} run(s) in {root}", header, body))
            for r in rows:
                if r["damaged"]:
                    typer.echo(f"note: {r['name']} is damaged: {r['damaged']}")  # plain text: no rich markup
