"""The `sweep` and `report` commands (registered on cryptonorm.cli's app when this module is imported).

No torch/pandas at import time: `cryptonorm --help` stays fast. The logic is in cryptonorm.sweeps and cryptonorm.claims
(spec, sweep, report, summary); this module parses options and renders with rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cryptonorm.cli.app import (
    STATE,
    FormatOpt,
    OpenOpt,
    SetOpt,
    TrackOpt,
    app,
    console,
    errors,
    open_report,
    report_formats,
    say,
)

if TYPE_CHECKING:

    from cryptonorm.sweeps.report import SweepReport

ReferenceOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--reference", "-r", help="Reference norm of the paired tests (default: the first model.norm "
                                           "listed, or the sweep file's `reference`)."),
]

ExecutorOpt = Annotated[str, typer.Option(help="local (process pool) or ray.")]
AddressOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option(help="Ray cluster address HOST:PORT (with --executor ray); default: a local Ray with --jobs CPUs."),
]
GpusPerCellOpt = Annotated[float, typer.Option("--gpus-per-cell", min=0.0, help=(
    "GPUs per cell: 0.25 packs four cells on each GPU (local: pinned workers; Ray: num_gpus per task); "
    "0 = no GPU asked for (local cells still use the GPU when train.device allows)."))]


def sweep_command(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep file (YAML): base config + grid.", show_default=False)],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Cells run at once (processes, or Ray CPUs).")] = 1,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Sweep directory (default sweeps/NAME).")] = None,  # noqa: UP045
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0.0,
    reference: ReferenceOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = None,
    open_: OpenOpt = False,
    track: TrackOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Write into an --out folder that is not a sweep "
                                                          "directory (its summary.md, sweep_results.csv and "
                                                          "plots/ are replaced).")] = False,
) -> None:
    """Run a grid of experiments in parallel; resumable (finished cells are skipped, failed ones retried)."""
    from cryptonorm.render import tables
    from cryptonorm.sweeps.orchestrate import check_outputs, sweep_and_report
    from cryptonorm.sweeps.results import RESULTS_CSV
    from cryptonorm.sweeps.spec import load_sweep

    with errors():
        report_formats(fmt)  # a bad --format fails before any training (and says when html falls back)
        check_outputs(fmt, track)  # and an unknown tracker
        spec = load_sweep(sweep_file, set_ or [])
        say(f"sweep {spec.spec.name}: {len(spec.cells)} cells over {', '.join(spec.grid_keys)} "
             f"({_where(executor, address, jobs)})")
        with tables.sweep_bar(disable=STATE.quiet) as on_event:
            done = sweep_and_report(spec, out, jobs=jobs, executor=executor, address=address,
                                    gpus_per_cell=gpus_per_cell, reference=reference, fmt=fmt, track=track,
                                    force=force, on_event=on_event)
        outcome = done.outcome
        _show(done.report)
        if done.backend is not None:
            from cryptonorm.pipeline.tracking import logged_note

            say(f"{done.tracked} new cell run(s) {logged_note(done.backend, f'sweep-{spec.spec.name}')}")
        again = f" ({outcome.rebacktested} re-backtested with new backtest settings)" if outcome.rebacktested else ""
        say(f"{outcome.ran} cell(s) run, {outcome.skipped} finished earlier{again}, in {outcome.seconds:.0f}s")
        typer.echo(str(outcome.sweep_dir))
        _report_path(done.report, open_)
        if outcome.failed:
            typer.echo(f"error: {outcome.failed} of {outcome.total} cells failed (see {RESULTS_CSV}); run the "
                       "same command again to retry them", err=True)
            raise typer.Exit(1)


def report_command(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory, e.g. sweeps/norms.", show_default=False)],
    reference: ReferenceOpt = None,
    fmt: FormatOpt = None,
    open_: OpenOpt = False,
) -> None:
    """Re-render a sweep's results table, summary.md, plots and report.html from its finished cells (no
    training); prints the report's path (report.html, or summary.md with --format png)."""
    from cryptonorm.sweeps import outputs

    with errors():
        report_formats(fmt)
        rep = outputs.render(sweep_dir, reference, fmt)
        _show(rep)
        if "html" not in rep.paths:
            typer.echo(str(rep.paths["summary"]))
        _report_path(rep, open_)


def _where(executor: str, address: str | None, jobs: int) -> str:
    """'executor local, 2 jobs' or 'executor ray at HOST:PORT' (the cluster's CPUs, not --jobs, set the pace)."""
    return f"executor {executor} at {address}" if address else f"executor {executor}, {jobs} job{'s' * (jobs > 1)}"


def _report_path(rep: SweepReport, open_: bool) -> None:
    """Print report.html's path (when written); open it (or summary.md) with --open."""
    page = rep.paths.get("html")
    if page is not None:
        typer.echo(str(page))
    if open_:
        open_report(page or rep.paths["summary"])


def _show(rep: SweepReport) -> None:
    from cryptonorm.render import tables
    from cryptonorm.sweeps import summary

    if STATE.quiet:
        return
    out = console()  # a log file or pipe gets the whole table, one line per row
    header, rows = summary.summary_table(rep, compact=True)
    c = rep.counts
    title = f"sweep {rep.meta.name}: mean ± std over seeds ({c['ok']}/{c['cells']} cells ok)"
    out.print(tables.simple_table(title, header, rows))
    th, tr = summary.tests_table(rep, compact=True)
    if tr:
        out.print(tables.simple_table(f"paired tests vs {rep.reference} over seeds (p raw, Holm-corrected)", th, tr))
    for title, (h, rr) in (("degradation from the largest batch", summary.degradation_table(rep)),
                           ("norm x batch size interaction", summary.interaction_table(rep))):
        if rr:
            out.print(tables.simple_table(title, h, rr))
    out.print(f"note: {summary.min_p_line(rep)}")
    for note in [*summary.test_notes(rep), *rep.notes]:
        out.print(f"note: {note}")
    out.print(f"results: {rep.paths.get('results')}  summary: {rep.paths.get('summary')}  "
              f"plots: {rep.paths.get('plots', '-')}  report: {rep.paths.get('html', '-')}")


def study_command(
    folder: Annotated[Path, typer.Argument(help="Folder of claim files (or one file), e.g. configs/studies/.",
                                           show_default=False)],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Cells run at once (processes, or Ray CPUs).")] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="The laptop profile: fewer seeds, epochs and cells.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Study directory (default "  # noqa: UP045
                                                                     "studies/quick or studies/full).")] = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0.0,
    set_: SetOpt = None,
    data_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--data-dir", help="Folder of the real candle files the claims name (keeps each file name; default "
                           "$CRYPTONORM_DATA_DIR, else data.file relative to the claim file).")] = None,
) -> None:
    """Test the article's claims: run every claim's sweep (resumable), write verdicts.md/json and plots."""
    from cryptonorm.claims import run as cl
    from cryptonorm.render import tables

    with errors():
        from cryptonorm.sweeps.executors import check_executor

        check_executor(executor, address, gpus_per_cell)  # before the claims load and the first line
        study_dir = out or cl.default_dir(quick)
        claims = cl.load_study(folder, study_dir, quick, tuple(set_ or []), data_dir)
        say(f"study: {len(claims)} claims, {sum(len(c.sweep.cells) for c in claims if c.sweep)} cells "
            f"({'quick' if quick else 'full'} profile, {_where(executor, address, jobs)}) -> {study_dir}")

        def announce(ev: dict[str, Any]) -> None:
            if ev["event"] == "claim":
                say(f"claim {ev['id']}: {ev['title']} ({ev['cells']} cells)")

        outcome = cl.run_study(claims, study_dir, jobs=jobs, profile="quick" if quick else "full",
                               on_event=announce, bar=lambda: tables.sweep_bar(disable=STATE.quiet),
                               executor=executor, address=address, gpus_per_cell=gpus_per_cell)
        if not STATE.quiet:
            rows = [[str(r["id"]), r["title"], r["data"]["kind"], r["verdict"]] for r in outcome.claims]
            console().print(tables.simple_table("verdicts", ["#", "claim", "data", "verdict"], rows))
        say(f"{outcome.seconds:.0f}s; verdicts: {outcome.study_dir / cl.VERDICTS_MD}")
        typer.echo(str(outcome.study_dir))
        if outcome.failed_cells:
            typer.echo(f"error: {outcome.failed_cells} cell(s) failed (see each claim's sweep_results.csv); run the "
                       "same command again to retry them", err=True)
            raise typer.Exit(1)


app.command("sweep")(sweep_command)
app.command("report")(report_command)
app.command("study")(study_command)
