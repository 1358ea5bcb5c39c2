"""A sweep in an experiment tracker: one experiment per sweep, one tracked run per finished cell."""

from __future__ import annotations

from pathlib import Path

from cryptonorm.pipeline.tracking import log_runs
from cryptonorm.sweeps.results import cell_dir, collect_results, load_sweep_dir


def track_sweep(sweep_dir: Path, backend: str) -> int:
    """Log every finished ("ok") cell's run under the experiment `sweep-<name>`; returns how many were new."""
    sweep_dir = Path(sweep_dir)
    name = load_sweep_dir(sweep_dir).name
    cells = [(r["cell_id"], cell_dir(sweep_dir, r["cell_id"]) / r.get("run_dir", "run"))
             for r in collect_results(sweep_dir) if r.get("status") == "ok"]
    return log_runs(backend, f"sweep-{name}", cells)
