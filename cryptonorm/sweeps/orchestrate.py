"""The whole `cryptonorm sweep` as one call, shared by the command and `cn.sweep`: run (or resume) the cells,
render the report, log the cells to a tracker. Commands only parse options and show what comes back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptonorm.sweeps.outputs import render
from cryptonorm.sweeps.report import SweepReport
from cryptonorm.sweeps.run import EventFn, SweepOutcome, run_sweep
from cryptonorm.sweeps.spec import Sweep


@dataclass(frozen=True)
class SweepRun:
    """What one sweep command did: the cells run, the report written, where the cells were logged."""

    outcome: SweepOutcome
    report: SweepReport
    backend: str | None = None  # the tracker the cells went to (mlflow, tensorboard), if any
    tracked: int = 0  # cells newly logged to it


def check_outputs(fmt: str | None, track: str | None) -> str | None:
    """A bad --format or --track is an error before any cell trains; returns the tracker's name (or None)."""
    from cryptonorm.pipeline.tracking import check_backend
    from cryptonorm.render.html import formats

    formats(fmt)
    return check_backend(track)


def sweep_and_report(spec: Sweep, out: Path | None = None, *, jobs: int = 1, executor: str = "local",
                     address: str | None = None, gpus_per_cell: float = 0.0, reference: str | None = None,
                     fmt: str | None = None, track: str | None = None, force: bool = False,
                     on_event: EventFn | None = None) -> SweepRun:
    """Run every unfinished cell of `spec` into `out` (default sweeps/NAME), then write sweep_results.csv,
    summary.md, the plots and report.html (per `fmt`), then log new cells to `track`."""
    backend = check_outputs(fmt, track)
    outcome = run_sweep(spec, out, jobs=jobs, executor=executor, address=address, on_event=on_event,
                        gpus_per_cell=gpus_per_cell, force=force)
    rep = render(outcome.sweep_dir, reference, fmt)
    tracked = 0
    if backend is not None:
        from cryptonorm.sweeps.tracking import track_sweep

        tracked = track_sweep(outcome.sweep_dir, backend)
    return SweepRun(outcome, rep, backend, tracked)
