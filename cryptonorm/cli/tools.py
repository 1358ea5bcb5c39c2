"""`export` (a run's model as ONNX) and `runs` (a table of run directories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cryptonorm.cli.app import STATE, JsonOpt, app, console, errors, say


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output ONNX file (raw features in, forecast out).",
                                       show_default=False)],
) -> None:
    """Export a run's model with its scaler folded in (input: raw feature windows; output: forecasts)."""
    from cryptonorm.pipeline.export import export_onnx

    with errors():
        summary = export_onnx(run_dir, onnx)
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
        body = [[r["name"], r["created"][:16].replace("T", " "), r["model"], r["norm"], r["target"],
                 fmt(r["test"].get("directional_accuracy"), "pct"), fmt(r["test"].get("ic_spearman"), "num3"),
                 fmt(r["sharpe"], "num"), fmt(r["buy_and_hold_sharpe"], "num"), "yes" if r["finished"] else "no"]
                for r in rows]
        if not STATE.quiet:
            console(wide=True).print(tables.simple_table(f"{len(rows)} run(s) in {root}", header, body))
