"""Sweeps: a grid of experiments over dotted config keys, run in parallel, resumable.

The sweep file and its cells: spec.py. One cell's run: cell.py. Executors: executors.py. Results: results.py.
All cells train on the very same candles: the parent loads (or fetches) them once, records their hash,
and hands the frame to every worker; each cell's run.json must show that hash.

Layout of SWEEP_DIR (default sweeps/<name>/):
    sweep.json               the resolved sweep: grid, cells, data hash (written before any cell runs)
    cells/<cell-id>/run/     the cell's run directory (pipeline.train + pipeline.backtest)
    cells/<cell-id>/result.json   written atomically as the cell's LAST step: status ok or failed
    sweep_results.csv        one row per cell
    summary.md, plots/       see outputs.py (report.py: the data; summary.py, plots.py, html.py)

Resuming: a cell whose result.json says "ok" for the same config (the cell id holds its hash) and the same
data hash is skipped; failed, unfinished (no result.json) and stale cells run again.

On a multi-node Ray cluster SWEEP_DIR should be on a shared filesystem; otherwise the parent writes each
cell's result.json, history.csv and forecasts.csv from what the task returns, which is all the report needs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptonorm.errors import PathError, UsageError
from cryptonorm.sweeps.cell import CellTask, needs_backtest, rebacktest_cell
from cryptonorm.sweeps.executors import (
    check_executor,
    cores,
    gpu_slots,
    import_ray,
    run_inline,
    run_pool,
    run_ray,
    visible_gpus,
)
from cryptonorm.sweeps.results import (
    CELLS_DIR,
    RESULT_FILE,
    SWEEP_FILE,
    cell_dir,
    collect_results,
    is_done,
    read_result,
    write_results_csv,
)
from cryptonorm.sweeps.spec import Cell, Sweep, label

if TYPE_CHECKING:
    import pandas as pd

EventFn = Callable[[dict[str, Any]], None]
LOCK_FILE = ".sweep.lock"
OWN_ENTRIES = (LOCK_FILE, CELLS_DIR)  # a folder with only these is a sweep's that stopped before sweep.json


@dataclass
class SweepOutcome:
    sweep_dir: Path
    data_hash: str
    total: int
    skipped: int  # finished earlier, not run again
    ran: int
    failed: int  # of all cells, after this run
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rebacktested: int = 0  # of the skipped (trained) cells: backtested again with new backtest settings




def prepare_data(sweep: Sweep, on_event: EventFn | None = None) -> tuple[pd.DataFrame, str]:
    """Load the candles every cell shares (fetching what is missing), and their hash."""
    from cryptonorm import pipeline
    from cryptonorm.data import store
    from cryptonorm.data.candles import data_hash

    cfg = sweep.cells[0].config
    if not store.have_candles(cfg):
        if on_event:
            on_event({"event": "fetch", "exchange": cfg.data.exchange, "symbols": cfg.data.symbols})
        pipeline.fetch(cfg)
    candles = store.load_candles(cfg)
    return candles, data_hash(candles)


# long function: the sweep from data to report, read top to bottom (each step is one call)
def run_sweep(sweep: Sweep, sweep_dir: Path | None = None, *, jobs: int = 1, executor: str = "local",
              address: str | None = None, on_event: EventFn | None = None, cell_plots: bool = True,
              gpus_per_cell: float = 0.0, force: bool = False) -> SweepOutcome:
    """Run every cell not finished yet; write sweep.json, each cell's result.json and sweep_results.csv.

    `sweep_dir` must be new, empty or a sweep directory (sweep.json): a folder of other files is refused
    unless `force` (the report's summary.md and sweep_results.csv would replace files of the same names).

    `cell_plots=False` skips each cell's equity.png (the claims study: hundreds of small cells).
    `gpus_per_cell` > 0 packs cells onto GPUs (executors.py): 0.25 = four cells per GPU."""
    from cryptonorm import atomic
    from cryptonorm.data import store

    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    check_executor(executor, address, gpus_per_cell)
    # local GPU slots; Ray places GPU tasks itself (the GPUs may be on other machines)
    slots = gpu_slots(gpus_per_cell, visible_gpus()) if gpus_per_cell > 0 and executor == "local" else None
    ray = import_ray() if executor == "ray" else None
    t0 = time.time()
    sweep_dir = Path(sweep_dir or sweep.default_dir()).resolve()
    check_sweep_dir(sweep_dir, force)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _lock(sweep_dir):
        candles, dhash = prepare_data(sweep, on_event)
        first = sweep.cells[0].config
        atomic.write_json(sweep_dir / SWEEP_FILE, {
            "name": sweep.spec.name, "description": sweep.spec.description, "sweep_file": str(sweep.path.resolve()),
            "base": str(sweep.base_path.resolve()), "set": sweep.spec.overrides, "cli_set": list(sweep.cli_overrides),
            "grid": sweep.grid, "zip": sweep.zip, "metrics": sweep.metrics, "reference": sweep.spec.reference,
            "horizon": first.target.horizon,
            "target": first.target.kind,
            "data": {"hash": dhash, "rows": len(candles), "path": str(store.candle_path(first)),
                     "first": int(candles["timestamp"].iloc[0]), "last": int(candles["timestamp"].iloc[-1])},
            "cells": [{"id": c.id, "params": c.params, "seed": c.config.seed} for c in sweep.cells],
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        todo: list[CellTask] = []
        rebacktest: list[Cell] = []  # trained, but backtested with other backtest settings
        stale = 0
        for c in sweep.cells:
            prev = read_result(cell_dir(sweep_dir, c) / RESULT_FILE)
            if is_done(prev, c, dhash):
                if prev is not None and needs_backtest(prev, c.config):
                    rebacktest.append(c)
                continue
            stale += prev is not None and prev.get("status") == "ok"
            todo.append(CellTask(c.id, c.params, c.config.to_dict(), c.config_hash, str(cell_dir(sweep_dir, c)),
                                 dhash, ship_files=executor == "ray", plot=cell_plots))
        skipped = len(sweep.cells) - len(todo)
        emit = on_event or (lambda _: None)
        emit({"event": "start", "total": len(sweep.cells), "todo": len(todo), "skipped": skipped, "stale": stale,
              "data_hash": dhash, "sweep_dir": str(sweep_dir)})
        counts = {"done": 0, "failed": 0}

        def finished(task: CellTask, result: dict[str, Any]) -> None:
            _land(task, result)
            counts["done"] += 1
            counts["failed"] += result.get("status") != "ok"
            emit({"event": "cell", "cell": task.cell_id, "label": label(task.params), "status": result["status"],
                  "error": result.get("error"), "done": counts["done"], "failed": counts["failed"],
                  "todo": len(todo)})

        threads = max(1, cores() // jobs)
        if slots is not None:
            jobs = min(jobs, len(slots))  # more workers than GPU slots would share one slot's GPU
        if ray is not None:
            run_ray(ray, todo, candles, jobs, address, threads, finished, gpus_per_cell)
        elif jobs == 1 and slots is None:
            run_inline(todo, candles, threads, finished)
        else:
            run_pool(todo, candles, jobs, threads, finished, slots)
        for c in rebacktest:  # seconds each: the saved forecasts traded with the new settings
            rebacktest_cell(cell_dir(sweep_dir, c), c.config, plot=cell_plots)
        results = collect_results(sweep_dir)
        write_results_csv(sweep_dir, results)
    failed = sum(r.get("status") != "ok" for r in results)
    return SweepOutcome(sweep_dir, dhash, len(sweep.cells), skipped, len(todo), failed, results, time.time() - t0,
                        len(rebacktest))


def check_sweep_dir(sweep_dir: Path, force: bool = False) -> None:
    """PathError when `sweep_dir` is a file; UsageError when it is a folder holding files but no sweep.json
    (not one a sweep wrote): writing the sweep there would replace the user's own summary.md, sweep_results.csv
    or plots/."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise PathError(f"{sweep_dir}: it is a file, not a folder; choose another path or move the file")
    if force or not sweep_dir.is_dir() or (sweep_dir / SWEEP_FILE).exists():
        return
    others = sorted(p.name for p in sweep_dir.iterdir() if p.name not in OWN_ENTRIES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise UsageError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}) and holds other files ({shown}); "
                         "choose a new or empty folder with --out, or pass --force to write the sweep into it")


def _land(task: CellTask, result: dict[str, Any]) -> None:
    """Make sure the verdict (and, from Ray, the files the report reads) exist on this machine."""
    from cryptonorm import atomic

    cdir = Path(task.cell_dir)
    files = result.pop("_files", None) or {}
    for name, text in files.items():
        target = cdir / "run" / name
        if not target.exists():
            atomic.write_text_atomic(target, text)
    if read_result(cdir / RESULT_FILE) is None:
        atomic.write_json(cdir / RESULT_FILE, result)


@contextlib.contextmanager
def _lock(sweep_dir: Path) -> Iterator[None]:
    """One sweep process per directory (the OS drops the lock if that process is killed)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(sweep_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another sweep is running in {sweep_dir}; wait for it or use --out") from None
    try:
        yield
    finally:
        lock.release()

