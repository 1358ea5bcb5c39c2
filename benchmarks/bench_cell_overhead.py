"""How long a sweep cell on the CPU spends outside training and backtesting (issue 32 target: under 1 s).

Three parts, each timed on its own:

1. process start + imports: a fresh `python -c "...warm_up()"` (what each spawned pool worker, or a
   Ray worker, pays once: torch, the model, feature and backtest code), best of `--starts` runs;
2. data load: `load_candles` of the cells' dataset (the sweep's parent does it once and every worker gets
   the frame with its initializer: the cache shared by the cells of one dataset), and the pickling of that
   frame that each spawned worker pays once;
3. inside the cell: `sweep.cell.run_cell` on a small real config (BTC/USDT 1h, Jan-Apr 2024, a tiny MLP,
   1 epoch), its wall time minus the training loop (`learn.training.fit`) and the backtest
   (`pipeline.backtest`): feature preparation, splits, predictions, hashing and the files written. Best of
   `--cells` cells after one untimed warm-up cell.

A cell's overhead is part 3, plus parts 1 and 2 divided by the cells each worker runs (`--cells-per-worker`,
a sweep of 600 cells on 16 workers: ~38). Wall times on whatever load the machine has: the load average is
printed beside them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cell_overhead.py [--cells 3] [--starts 3]
        [--cells-per-worker 38]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def start_and_imports(starts: int) -> tuple[float, float]:
    """(best wall s, best CPU s of the child) of a fresh interpreter importing what a cell needs."""
    code = "from cryptonorm.sweeps.cell import warm_up; warm_up()"
    walls, cpus = [], []
    for _ in range(starts):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(walls), min(cpus)


def in_cell(cells: int) -> dict[str, float]:
    """Best (wall, fit, backtest, rest) seconds of `cells` run_cell calls after one warm-up."""
    from conftest import small_real_config

    from cryptonorm import pipeline
    from cryptonorm.config import build_config
    from cryptonorm.data import store
    from cryptonorm.data.candles import data_hash
    from cryptonorm.learn import training
    from cryptonorm.sweeps.cell import CellTask, run_cell

    raw = small_real_config()
    raw["train"] = {**raw["train"], "epochs": 1}  # type: ignore[dict-item]
    cfg = build_config(raw)
    t0 = time.perf_counter()
    candles = store.load_candles(cfg)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = pickle.dumps(candles)
    pickle.loads(blob)
    ship = time.perf_counter() - t0
    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    fit, backtest = training.fit, pipeline.backtest
    training.fit = timed("fit", fit)  # type: ignore[assignment]
    pipeline.backtest = timed("backtest", backtest)  # type: ignore[assignment]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(cells + 1):
                spent.clear()
                task = CellTask(cell_id=f"c{i}", params={}, config={**cfg.to_dict(), "seed": i}, config_hash="x",
                                cell_dir=str(Path(tmp) / f"c{i}"), data_hash=data_hash(candles), plot=False)
                t0 = time.perf_counter()
                result = run_cell(task, candles)
                wall = time.perf_counter() - t0
                assert result["status"] == "ok", result
                if i:  # the first cell is the warm-up
                    rows.append((wall, spent["fit"], spent["backtest"], wall - spent["fit"] - spent["backtest"]))
    finally:
        training.fit, pipeline.backtest = fit, backtest  # type: ignore[assignment]
    best = min(rows, key=lambda r: r[3])
    return {"load": load, "ship": ship, "wall": best[0], "fit": best[1], "backtest": best[2], "rest": best[3],
            "bars": float(len(candles))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--cells-per-worker", type=int, default=38)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}")
    start, start_cpu = start_and_imports(args.starts)
    cell = in_cell(args.cells)
    per_worker = start + cell["ship"]
    total = cell["rest"] + per_worker / args.cells_per_worker
    print(f"{'part':<58} {'wall s':>8}")
    for what, s in (("process start + imports (once per worker), wall", start),
                    ("  the same, CPU time of the child (less disturbed by load)", start_cpu),
                    (f"data load, {int(cell['bars']):,} bars (once per sweep, the parent)", cell["load"]),
                    ("candles pickled to a worker and back (once per worker)", cell["ship"]),
                    ("in the cell: training loop (fit, 1 epoch)", cell["fit"]),
                    ("in the cell: backtest", cell["backtest"]),
                    ("in the cell: everything else", cell["rest"]),
                    (f"overhead per cell ({args.cells_per_worker} cells per worker)", total)):
        print(f"{what:<58} {s:8.3f}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
