"""Command line: parse, load the config, call one pipeline step, render with rich.

Heavy modules (torch, pandas, ccxt) are imported inside the commands so `cryptonorm --help` is fast.
User errors (CryptonormError) print one line to stderr and exit 2 (config/usage) or 1 (runtime);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from cryptonorm import __version__
from cryptonorm.errors import CryptonormError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from cryptonorm.config import Config

class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, missing argument) as one line on stderr, exit 2, like our own errors."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as e:  # `cryptonorm` or `cryptonorm config` alone: the help
            typer.echo(e.ctx.get_help() if e.ctx is not None else "")
            rv = 2
        except ClickUsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "cryptonorm"
            typer.echo(f"error: {e.format_message()} (see {where} --help)", err=True)
            rv = 2
        except ClickException as e:
            typer.echo(f"error: {e.format_message()}", err=True)
            rv = e.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            rv = 1
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="cryptonorm",
    cls=_OneLineErrors,
    help="Deep-learning forecasters on crypto markets, with the normalization layer as a switch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show or check an experiment config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class _State:
    debug = False
    quiet = False


STATE = _State()

SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--set", "-s", help="Override a config key: --set model.norm=group (repeatable)."),
]
ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of tables.")]
OutOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here
    typer.Option("--out", "-o", help="Run directory (default runs/NAME-TIME)."),
]


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _say(msg: str) -> None:
    if not STATE.quiet:
        _console().print(msg)


_INTERRUPTED = "interrupted: what was already stored is kept; run the command again to resume"


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """One line on stderr and the right exit code for every user-facing error."""
    try:
        yield
    except CryptonormError as e:
        if STATE.debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        typer.echo(_INTERRUPTED, err=True)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # a bug, or an environment problem we did not foresee: still one line
        if STATE.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        typer.echo(f"error: internal error {type(e).__name__}: {first} (run with --debug for the traceback)",
                   err=True)
        raise typer.Exit(1) from None


def _load(path: Path | None, sets: list[str] | None, **cli: Any) -> Config:
    """Config from file (or defaults), then command-line options, then --set overrides."""
    from cryptonorm.config import apply_overrides, build_config, read_yaml

    raw = read_yaml(path) if path is not None else {}
    extra = [f"{k}={json.dumps(v)}" for k, v in cli.items() if v is not None]
    return build_config(apply_overrides(raw, [*extra, *(sets or [])]), source=str(path) if path else "config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cryptonorm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only essential output.")] = False,
) -> None:
    STATE.debug, STATE.quiet = debug, quiet


# ---------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config: every default visible."""
    from cryptonorm.config import dump_yaml

    with _errors():
        typer.echo(dump_yaml(_load(config, set_)), nl=False)


@config_app.command("validate")
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config; exit 2 with the first problem if it is wrong."""
    with _errors():
        cfg = _load(config, set_)
        source = f"file {cfg.data.file}" if cfg.data.file else cfg.data.exchange
        _say(f"{config}: ok ({cfg.model.kind}, norm={cfg.model.norm}, {source} "
             f"{', '.join(cfg.data.symbols)} {cfg.data.timeframe})")


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
    from cryptonorm import pipeline, tables

    with _errors():
        sym: Any = symbol[0] if symbol and len(symbol) == 1 else symbol
        cfg = _load(config, set_, **{"data.exchange": exchange, "data.symbol": sym, "data.timeframe": timeframe,
                                     "data.since": since, "data.until": until,
                                     "data.dir": str(data_dir) if data_dir else None})
        with tables.progress_bar("candles", disable=STATE.quiet) as update:
            summaries = pipeline.fetch(cfg, progress=update)
        if not STATE.quiet:
            _console().print(tables.fetch_table(summaries))
            if gaps:
                _console().print(tables.gaps_table(summaries))


# ---------------------------------------------------------------- features and audit


@app.command()
def features(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file, .parquet or .csv.")],
    set_: SetOpt = None,
) -> None:
    """Write the raw (unscaled) feature table to a file."""
    from cryptonorm import pipeline

    with _errors():
        path, rows, cols = pipeline.features(_load(config, set_), out)
        _say(f"wrote {rows} rows x {cols} columns to {path}")


@app.command()
def audit(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check for look-ahead: features, scaled inputs and labels must not change when the future is cut."""
    from cryptonorm import pipeline, tables

    with _errors():
        result = pipeline.audit(_load(config, set_))
        ok = tables.render_audit(_console(), result, quiet=STATE.quiet)
        if not ok:
            raise typer.Exit(1)


# ---------------------------------------------------------------- train / predict / backtest / run


@app.command()
def train(
    config: ConfigArg,
    out: OutOpt = None,
    json_: JsonOpt = False,
    set_: SetOpt = None,
) -> None:
    """Train a forecaster; prints the run directory."""
    from cryptonorm import pipeline, tables

    with _errors():
        cfg = _load(config, set_)
        summary = _train(cfg, out, json_)
        if json_:
            typer.echo(json.dumps(pipeline.json_safe({"run_dir": summary.run_dir, "device": summary.device,
                                                      "stopped": summary.stopped, "metrics": summary.metrics})))
            return
        if not STATE.quiet:
            _console().print(tables.train_table(summary))
        typer.echo(str(summary.run_dir))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `cryptonorm train`.")],
    data_file: Annotated[Optional[Path], typer.Option("--data", help="Another candle file (CSV/parquet).")] = None,  # noqa: UP045
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output CSV.")] = None,  # noqa: UP045
) -> None:
    """Write forecasts from a saved run."""
    from cryptonorm import pipeline

    with _errors():
        path, n = pipeline.predict(run_dir, data_file, out)
        _say(f"wrote {n} forecasts to {path}")


@app.command()
def backtest(
    target: Annotated[Path, typer.Argument(help="A run directory, or a config (trains first).")],
    json_: JsonOpt = False,
    set_: SetOpt = None,
) -> None:
    """Turn forecasts into positions and returns after fees, against buy-and-hold."""
    from cryptonorm import pipeline

    with _errors():
        if pipeline.is_run_dir(target):
            if set_:
                raise UsageError("--set applies to a config, not to a finished run directory")
            out_dir, result = pipeline.backtest(target)
        else:
            cfg = _load(target, set_)
            summary = _train(cfg, None, json_)
            out_dir, result = pipeline.backtest(summary.run_dir)
        _show_backtest(out_dir, result, json_)


def _train(cfg: Config, out: Path | None, json_: bool) -> Any:
    """Train with an epoch bar (unless quiet or --json); warn on stderr if the loss went non-finite."""
    from cryptonorm import pipeline, tables

    with tables.epoch_bar(cfg.train.epochs, disable=STATE.quiet or json_) as update:
        summary = pipeline.train(cfg, out, progress=update)
    if summary.stopped == "non_finite_loss":
        typer.echo(f"warning: {summary.metrics.get('message')}", err=True)
    return summary


def _show_backtest(out_dir: Path, result: Any, json_: bool) -> None:
    from cryptonorm import pipeline, report

    if json_:
        typer.echo(json.dumps(pipeline.json_safe(result.metrics)))
        return
    if not STATE.quiet:
        _console().print(report.metrics_table(result.metrics))
    typer.echo(str(out_dir))


@app.command()
def run(
    config: ConfigArg,
    out: OutOpt = None,
    json_: JsonOpt = False,
    set_: SetOpt = None,
) -> None:
    """Fetch (if missing), train, backtest and report in one go."""
    from cryptonorm import pipeline, tables

    with _errors():
        cfg = _load(config, set_)
        if not pipeline.have_candles(cfg):
            _say(f"fetching {', '.join(cfg.data.symbols)} {cfg.data.timeframe} from {cfg.data.exchange}")
            with tables.progress_bar("candles", disable=STATE.quiet or json_) as update:
                pipeline.fetch(cfg, progress=update)
        summary = _train(cfg, out, json_)
        if not STATE.quiet and not json_:
            _console().print(tables.train_table(summary))
        out_dir, result = pipeline.backtest(summary.run_dir)
        _show_backtest(out_dir, result, json_)
        _say(f"run directory: {summary.run_dir}  (equity plot: {out_dir / 'equity.png'})")


# `sweep` and `report` live in their own module; importing it registers them on `app`.
from cryptonorm import cli_sweep as _cli_sweep  # noqa: E402,F401


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C, so atomic writers remove their temp files and one line is printed."""


def _unraisable(info: Any) -> None:
    """A signal that lands inside a GC or weakref callback cannot unwind the program from there, and Python
    would print "Exception ignored" with a traceback and go on. Stop at once instead, with the usual line;
    the temp file of a write in progress is removed by the next run."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        sys.stderr.write(f"{_INTERRUPTED}\n")
        sys.stderr.flush()
        os._exit(143 if isinstance(info.exc_value, Terminated) else 130)
    sys.__unraisablehook__(info)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _unraisable
    app(prog_name="cryptonorm")


if __name__ == "__main__":  # pragma: no cover
    main()
