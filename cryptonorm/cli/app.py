"""The typer app every command module registers on: global options, one-line errors, signals, main().

Command line: parse, load the config, call one pipeline step, render with rich.

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
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from cryptonorm import __version__
from cryptonorm.errors import CryptonormError, Hint, PathError, path_error

if TYPE_CHECKING:
    from rich.console import Console

    from cryptonorm.config import Config

class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, missing argument) as one line on stderr, exit 2, like our own errors.

    Only typer's public API: every parsing error is a `typer.TyperException` (typer vendors click, whose
    exceptions derive from it) with `exit_code`, `format_message()` and, for usage errors, `ctx`.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        if args is not None:
            args = list(args)  # it may be an iterator: read it once, hand the list on
        STATE.argv = list(args) if args is not None else sys.argv[1:]  # for the exact command to resume
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as e:
            rv = _usage_error(e)
        except typer.Abort:
            typer.echo("aborted", err=True)
            rv = 1
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_error(e: typer.TyperException) -> int:
    """Print a parsing error as one line (or the help, for a bare group) and return its exit code."""
    ctx = getattr(e, "ctx", None)
    code = int(getattr(e, "exit_code", 1))
    message = e.format_message()
    if ctx is not None and (not message.strip() or message.lstrip().startswith("Usage:")):
        # `cryptonorm` or `cryptonorm config` alone: the help, which typer's rich formatter has already
        # printed while building the error (its message is then empty)
        if message.strip():
            typer.echo(message)
        return 2
    if code == 2:
        where = ctx.command_path if ctx is not None else "cryptonorm"
        typer.echo(f"error: {message} (see {where} --help)", err=True)
    else:
        typer.echo(f"error: {message}", err=True)
    return code


app = typer.Typer(
    name="cryptonorm",
    cls=_OneLineErrors,
    help="Deep-learning forecasters on crypto markets, with the normalization layer as a switch.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, powershell)
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show or check an experiment config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class _State:
    debug = False
    quiet = False
    resume_hint = ""  # how to resume the command under way if it is interrupted ("" = run it again)
    argv: list[str] = []  # the command line as given (after the program name)


STATE = _State()
CLI_WORDS = {Hint.FORCE: "--force", Hint.OUT: "--out"}  # how the command line spells each error hint

SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--set", "-s", help="Override a config key: --set model.norm=group (repeatable)."),
]
ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of tables.")]
TrackOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--track", help="Log to an experiment tracker: mlflow (MLFLOW_TRACKING_URI, default "
                                 "sqlite:///mlruns.db) or tensorboard (./tensorboard). Needs the `track` extra."),
]
OutOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here
    typer.Option("--out", "-o", help="Run directory (default runs/NAME-TIME)."),
]


FormatOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--format", help="Report format: png, html (interactive, offline) or both. Default: both, "
                                  "or png alone when plotly is not installed.", show_default=False),
]
OpenOpt = Annotated[bool, typer.Option("--open", help="Open the report in the default web browser, if there is one.")]


def report_formats(fmt: str | None) -> tuple[str, ...]:
    """The formats to write (cryptonorm.render.html.formats); says so when the default falls back to png."""
    from cryptonorm.render.html import INSTALL_HINT, formats

    want = formats(fmt)
    if fmt is None and "html" not in want:
        # typer.echo, not say(): rich would read the extra's [brackets] as markup and drop them
        if not STATE.quiet:
            typer.echo(f"note: plotly is not installed, so no HTML report (PNG only): {INSTALL_HINT.split(', or')[0]}")
    return want


def open_report(path: Path) -> None:
    """Open `path` in the default web browser; one line instead when there is none (not an error)."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        typer.echo(f"note: no web browser found to open {path}; open it yourself", err=True)
        return
    browser.open(Path(path).resolve().as_uri())


PIPED_WIDTH = 10_000  # off a terminal: tables take their natural width (one line per row), never cut at 80


def console(stderr: bool = False, wide: bool = True) -> Console:
    """A rich console. Off a terminal (a log file, a pipe) tables are never truncated or wrapped: they take
    their natural width. `wide=False` keeps rich's 80 columns there (for text meant to wrap)."""
    from rich.console import Console

    width = PIPED_WIDTH if wide and not (sys.stderr if stderr else sys.stdout).isatty() else None
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def say(msg: str) -> None:
    if not STATE.quiet:
        console().print(msg)


def resume_command(run_dir: Path, argv: list[str] | None = None) -> str:
    """The exact command that resumes an interrupted training into `run_dir`: the command line as given
    (or `argv`), without --force (it would start over), with `--out run_dir` (replacing any other --out)."""
    import shlex

    args: list[str] = []
    skip = False
    for a in STATE.argv if argv is None else argv:
        if skip:
            skip = False
        elif a in ("--out", "-o"):
            skip = True
        elif a != "--force" and not a.startswith("--out="):
            args.append(a)
    return shlex.join(["cryptonorm", *args, "--out", str(run_dir)])


def _interrupted() -> str:
    hint = f"to resume, run: {STATE.resume_hint}" if STATE.resume_hint else "run the command again to resume"
    return f"interrupted: what was already stored is kept; {hint}"


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """One line on stderr and the right exit code for every user-facing error."""
    try:
        yield
    except CryptonormError as e:
        if STATE.debug:
            raise
        typer.echo(f"error: {e.render(CLI_WORDS)}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        typer.echo(_interrupted(), err=True)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    except (typer.Exit, typer.Abort):
        raise
    except OSError as e:
        if e.filename is None or STATE.debug:  # not about a path (a network error, a broken pipe): below
            raise
        typer.echo(f"error: {path_error(e)}", err=True)
        raise typer.Exit(PathError.exit_code) from None
    except Exception as e:  # a bug, or an environment problem we did not foresee: still one line
        if STATE.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        typer.echo(f"error: internal error {type(e).__name__}: {first} (run with --debug for the traceback)",
                   err=True)
        raise typer.Exit(1) from None


def load_cli_config(path: Path | None, sets: list[str] | None, **cli: Any) -> Config:
    """Config from file (or defaults), then command-line options, then --set overrides."""
    from cryptonorm.config import apply_overrides, build_config, moved_keys, read_yaml

    raw = read_yaml(path) if path is not None else {}
    extra = [f"{k}={json.dumps(v)}" for k, v in cli.items() if v is not None]
    raw = apply_overrides(raw, [*extra, *(sets or [])])
    cfg = build_config(raw, source=str(path) if path else "config")
    for note in moved_keys(raw):  # after validation: a refused config says only what is wrong
        typer.echo(note, err=True)
    return cfg


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
    warnings.showwarning = _show_warning


_python_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A FutureWarning is a note for the user (e.g. an old config key, config/model.py): one line, no source
    location; other warnings keep Python's format."""
    if issubclass(category, FutureWarning):
        sys.stderr.write(f"note: {message}\n")
        return
    _python_showwarning(message, category, filename, lineno, file, line)



def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C, so atomic writers remove their temp files and one line is printed."""


def _unraisable(info: Any) -> None:
    """A signal that lands inside a GC or weakref callback cannot unwind the program from there, and Python
    would print "Exception ignored" with a traceback and go on. Stop at once instead, with the usual line;
    the temp file of a write in progress is removed by the next run."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        sys.stderr.write(f"{_interrupted()}\n")
        sys.stderr.flush()
        os._exit(143 if isinstance(info.exc_value, Terminated) else 130)
    sys.__unraisablehook__(info)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _unraisable
    try:
        app(prog_name="cryptonorm")
    except KeyboardInterrupt as e:  # one that landed outside a command's errors() block (imports, parsing)
        sys.stderr.write(f"{_interrupted()}\n")
        sys.exit(143 if isinstance(e, Terminated) else 130)


if __name__ == "__main__":  # pragma: no cover
    main()
