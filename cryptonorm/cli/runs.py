"""`train`, `predict`, `backtest` and `run`: one run directory each."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cryptonorm.cli.app import (
    STATE,
    ConfigArg,
    FormatOpt,
    JsonOpt,
    OpenOpt,
    OutOpt,
    SetOpt,
    TrackOpt,
    app,
    console,
    errors,
    load_cli_config,
    open_report,
    report_formats,
    resume_command,
    say,
)
from cryptonorm.errors import UsageError

if TYPE_CHECKING:
    from cryptonorm.config import Config

# ---------------------------------------------------------------- train / predict / backtest / run


ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a finished run in --out (or restart an "
                                        "interrupted one instead of resuming it).")]


@app.command()
def train(
    config: ConfigArg,
    out: OutOpt = None,
    json_: JsonOpt = False,
    set_: SetOpt = None,
    track: TrackOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train a forecaster; prints the run directory."""
    from cryptonorm import atomic
    from cryptonorm.pipeline.tracking import check_backend
    from cryptonorm.render import tables

    with errors():
        cfg = load_cli_config(config, set_)
        backend = check_backend(track)
        summary = _train(cfg, out, json_, force)
        _track(backend, cfg, summary.run_dir)
        if json_:
            typer.echo(json.dumps(atomic.json_safe({"run_dir": summary.run_dir, "device": summary.device,
                                                      "stopped": summary.stopped, "metrics": summary.metrics})))
            return
        if not STATE.quiet:
            console().print(tables.train_table(summary))
        typer.echo(str(summary.run_dir))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `cryptonorm train`.")],
    data_file: Annotated[Optional[Path], typer.Option("--data", help="Another candle file (CSV/parquet).")] = None,  # noqa: UP045
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output CSV.")] = None,  # noqa: UP045
) -> None:
    """Write forecasts from a saved run."""
    from cryptonorm import pipeline

    with errors():
        path, n = pipeline.predict(run_dir, data_file, out)
        say(f"wrote {n} forecasts to {path}")


GridOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--grid", "-g", help="On a run directory: backtest.KEY=[v1,v2,...] (repeatable, at most two "
                                      "keys): a grid on the validation split, the test split reported once."),
]


@app.command()
def backtest(
    target: Annotated[Path, typer.Argument(help="A run directory, or a config (trains first).")],
    json_: JsonOpt = False,
    set_: SetOpt = None,
    grid: GridOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="With a run directory and --set/--grid: "  # noqa: UP045
                                                "the output folder (default RUN_DIR/backtest-<hash>).")] = None,
    fmt: FormatOpt = None,
    open_: OpenOpt = False,
    track: TrackOpt = None,
) -> None:
    """Turn forecasts into positions and returns after fees, against buy-and-hold; prints the backtest
    directory, then the report's path (report.html, or equity.png with --format png).

    On a run directory, --set backtest.KEY=V re-backtests its saved forecasts (no retraining) into
    RUN_DIR/backtest-<hash>/; --grid tries several values on the validation split.
    """
    from cryptonorm import pipeline
    from cryptonorm.pipeline import rebacktest
    from cryptonorm.pipeline.tracking import check_backend

    with errors():
        want = report_formats(fmt)  # a bad --format fails before any work
        backend = check_backend(track)
        if pipeline.is_run_dir(target):
            if backend is not None:
                raise UsageError("--track applies to a config (train, backtest, then log); a finished run is "
                                 "logged by `cryptonorm train/run CONFIG --track ...`")
            if grid:
                result = rebacktest.grid(target, rebacktest.parse_grid(grid), out,
                                         overrides=rebacktest.parse_sets(set_ or []))
                _show_grid(result, json_)
                return
            written, result = rebacktest.backtest_saved(target, rebacktest.parse_sets(set_ or []), out, fmt=fmt)
            out_dir = written if written is not None else target
        else:
            if grid or out is not None:
                raise UsageError("--grid and --out apply to a run directory; train first, then "
                                 "`cryptonorm backtest RUN_DIR --grid ...`")
            cfg = load_cli_config(target, set_)
            again = ["train", str(target), *(a for s in set_ or [] for a in ("--set", s))]
            summary = _train(cfg, None, json_, False, argv=again)
            out_dir, result = pipeline.backtest(summary.run_dir, fmt=fmt)
            _track(backend, cfg, summary.run_dir)
        _show_backtest(out_dir, result, json_, open_, want)


def _show_grid(result: Any, json_: bool) -> None:
    from cryptonorm import atomic
    from cryptonorm.pipeline.rebacktest import grid_note
    from cryptonorm.render import tables

    if json_:
        typer.echo(json.dumps(atomic.json_safe({
            "grid": result.table.to_dict(orient="records"), "selected": result.selected.to_dict(orient="records"),
            "val": result.val, "test": result.test, "note": grid_note(result),
            "paths": {k: str(v) for k, v in result.paths.items()}})))
        return
    if not STATE.quiet:
        for title, header, rows in tables.grid_tables(result):
            console(wide=True).print(tables.simple_table(title, header, rows))
        say(f"note: {grid_note(result)}")
        say(f"heatmap: {result.paths.get('heatmap')}")
    typer.echo(str(result.out_dir))


def _train(cfg: Config, out: Path | None, json_: bool, force: bool, backtest: bool = False,
           fmt: str | None = None, argv: list[str] | None = None) -> Any:
    """Train (and backtest) with an epoch bar (unless quiet or --json); warn on stderr if the loss went
    non-finite; say where an interrupted run was resumed, and the exact command that resumes this one if it
    is interrupted (the command line as given, or `argv`, with the run directory's --out)."""
    from cryptonorm import pipeline
    from cryptonorm.render import tables

    created = out is None
    run_dir = pipeline.new_run_dir(cfg) if out is None else out  # named now, so an interrupt can say where
    STATE.resume_hint = resume_command(run_dir, argv)  # kept until errors() has printed it
    try:
        with tables.epoch_bar(cfg.train.epochs, disable=STATE.quiet or json_) as update:
            if backtest:
                summary, out_dir, result = pipeline.train_and_backtest(cfg, run_dir, force=force, progress=update,
                                                                       fmt=fmt)
            else:
                summary = pipeline.train(cfg, run_dir, force=force, progress=update)
    except BaseException as e:
        if created:
            pipeline.RunDir(run_dir).remove_if_empty()  # refused before anything was written: leave no empty folder
        if not isinstance(e, KeyboardInterrupt) or not run_dir.exists():
            STATE.resume_hint = ""  # nothing to resume
        elif pipeline.RunDir(run_dir).finished:  # `run` stopped in its backtest: the training is done
            again = ["cryptonorm", "backtest", str(run_dir), *(["--format", fmt] if fmt else [])]
            STATE.resume_hint = shlex.join(again) if backtest else ""
        raise
    STATE.resume_hint = ""
    if summary.resumed:
        typer.echo(f"resumed the interrupted run in {summary.run_dir} {summary.resumed}", err=True)
    if summary.stopped == "non_finite_loss":
        typer.echo(f"warning: {summary.metrics.get('message')}", err=True)
    return (summary, out_dir, result) if backtest else summary


def _show_backtest(out_dir: Path, result: Any, json_: bool, open_: bool, want: tuple[str, ...]) -> None:
    """The metrics table, the backtest directory and the report's path (--json: the metrics alone)."""
    from cryptonorm import atomic
    from cryptonorm.pipeline.reports import EQUITY_PNG, REPORT_HTML
    from cryptonorm.render import plots as report

    page = out_dir / (REPORT_HTML if "html" in want else EQUITY_PNG)
    if json_:
        typer.echo(json.dumps(atomic.json_safe(result.metrics)))
    else:
        if not STATE.quiet:
            console().print(report.metrics_table(result.metrics))
        typer.echo(str(out_dir))
        typer.echo(str(page))
    if open_:
        open_report(page)


@app.command()
def run(
    config: ConfigArg,
    out: OutOpt = None,
    json_: JsonOpt = False,
    set_: SetOpt = None,
    fmt: FormatOpt = None,
    open_: OpenOpt = False,
    track: TrackOpt = None,
    force: ForceOpt = False,
) -> None:
    """Fetch (if missing), train, backtest and report in one go."""
    from cryptonorm import atomic, pipeline
    from cryptonorm.data import store
    from cryptonorm.pipeline.tracking import check_backend
    from cryptonorm.render import tables

    with errors():
        want = report_formats(fmt)
        cfg = load_cli_config(config, set_)
        backend = check_backend(track)
        if not store.have_candles(cfg):
            say(f"fetching {', '.join(cfg.data.symbols)} {cfg.data.timeframe} from {cfg.data.exchange}")
            with tables.progress_bar("candles", disable=STATE.quiet or json_) as update:
                pipeline.fetch(cfg, progress=update)
        summary, out_dir, result = _train(cfg, out, json_, force, backtest=True, fmt=fmt)
        _track(backend, cfg, summary.run_dir)
        if json_:  # one document: the run, its training and its backtest
            typer.echo(json.dumps(atomic.json_safe({
                "run_dir": summary.run_dir, "device": summary.device, "stopped": summary.stopped,
                "metrics": summary.metrics, "backtest_dir": out_dir, "backtest": result.metrics})))
            return
        if not STATE.quiet:
            console().print(tables.train_table(summary))
        _show_backtest(out_dir, result, json_, open_, want)
        say(f"run directory: {summary.run_dir}")


def _track(backend: str | None, cfg: Config, run_dir: Path) -> None:
    """Log a finished run to the tracker (experiment = the config's name, run = the run directory's name)."""
    if backend is None:
        return
    from cryptonorm.pipeline.tracking import log_runs, logged_note

    log_runs(backend, cfg.name, [(Path(run_dir).name, Path(run_dir))])
    say(logged_note(backend, cfg.name))
