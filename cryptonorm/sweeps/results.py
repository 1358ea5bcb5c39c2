"""Results: each cell's result.json, collected into one frame (sweep_results.csv), and the grid helpers
that group that frame (values shown as strings, combinations of keys, selections)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptonorm.atomic import read_json_object
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.evaluate.keys import SEED_KEY
from cryptonorm.sweeps.meta import SweepMeta
from cryptonorm.sweeps.spec import Cell, show

if TYPE_CHECKING:
    import pandas as pd

RESULT_FILE = "result.json"
SWEEP_FILE = "sweep.json"
RESULTS_CSV = "sweep_results.csv"
CELLS_DIR = "cells"  # SWEEP_DIR/cells/<cell id>/
FORECAST_KEYS = ("mse", "mae", "directional_accuracy", "ic_pearson", "ic_spearman", "accuracy", "log_loss", "auc")
BACKTEST_KEYS = ("sharpe", "sortino", "total_return", "cagr", "volatility", "max_drawdown", "trades", "win_rate",
                 "hit_rate", "exposure", "turnover", "fees_paid")
# the metrics the aggregated table shows, where the cells have them
SUMMARY_METRICS = ("test_qlike", "test_mse_var", "test_mse_vol", "test_mz_slope", "test_mse", "test_mae",
                   "test_directional_accuracy", "test_rank_ic", "test_log_loss", "test_auc", "bt_sharpe",
                   "bt_total_return", "bt_max_drawdown", "train_seconds")


def cell_dir(sweep_dir: Path, cell: Cell | str) -> Path:
    """SWEEP_DIR/cells/<cell id>."""
    return sweep_dir / CELLS_DIR / (cell if isinstance(cell, str) else cell.id)


def read_result(path: Path) -> dict[str, Any] | None:
    """A cell's result.json, or None when it is missing or unreadable (then the cell runs again)."""
    return read_json_object(path)


def is_done(result: dict[str, Any] | None, cell: Cell, data_hash: str) -> bool:
    """A cell is finished when its result says ok for the same config hash and data hash."""
    return (result is not None and result.get("status") == "ok" and result.get("config_hash") == cell.config_hash
            and result.get("data_hash") == data_hash)



def load_sweep_dir(sweep_dir: Path) -> SweepMeta:
    """sweep.json of a sweep directory (what `cryptonorm report` starts from)."""
    p = Path(sweep_dir) / SWEEP_FILE
    if not p.exists():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}); pass the directory "
                          "`cryptonorm sweep` wrote, e.g. sweeps/norms")
    try:
        meta = json.loads(p.read_text())
    except ValueError as e:
        raise DataError(f"{p} is damaged ({e}); run the sweep again to rewrite it") from None
    return SweepMeta.from_json(meta, p)


def collect_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """One result per cell listed in sweep.json; cells without a verdict are 'pending'."""
    meta = load_sweep_dir(sweep_dir)
    dhash = meta.data.hash
    out = []
    for c in meta.cells:
        r = read_result(cell_dir(Path(sweep_dir), c.id) / RESULT_FILE)
        if r is None or (r.get("status") == "ok" and r.get("data_hash") != dhash):
            r = {"cell_id": c.id, "params": c.params, "seed": c.seed, "status": "pending", "error": None}
        out.append(r)
    return out


def cell_damage(path: Path) -> str | None:
    """Why a cell's result.json cannot be read (None when it is fine or absent: absent = not finished)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    try:
        out = json.loads(text)
    except ValueError as e:
        return f"not valid JSON ({e})"
    if not isinstance(out, dict):
        return "not a JSON object"
    if out.get("status") not in ("ok", "failed"):
        return f"no valid status (got {out.get('status')!r})"
    return None


def damaged_cells(sweep_dir: Path) -> dict[str, str]:
    """cell id -> why its result.json is damaged, for every cell of sweep.json whose verdict cannot be read."""
    meta = load_sweep_dir(sweep_dir)
    found = {c.id: cell_damage(cell_dir(Path(sweep_dir), c.id) / RESULT_FILE) for c in meta.cells}
    return {k: v for k, v in found.items() if v is not None}


def result_row(result: dict[str, Any], grid_keys: list[str], sweep_dir: Path) -> dict[str, Any]:
    """Flatten one result into a CSV row: grid keys, seed, status, metrics, backtest, timing, run dir."""
    row: dict[str, Any] = {"cell_id": result["cell_id"]}
    params = result.get("params", {})
    for k in grid_keys:
        v = params.get(k)
        row[k] = show(v) if isinstance(v, (list, dict)) else v
    row["seed"] = result.get("seed")
    row["status"] = result.get("status")
    metrics = result.get("metrics") or {}
    for split in ("val", "test"):
        m = metrics.get(split) or {}
        for key in [*(k for k in FORECAST_KEYS if k in m), *sorted(k for k in m if k not in FORECAST_KEYS)]:
            if _number(m[key]):  # every scalar metric a target kind reports (qlike, mz_slope, ...)
                row[f"{split}_{key}"] = m[key]
        if "rank_ic" not in m and _number(m.get("ic_spearman")):  # one name for the rank IC of every kind
            row[f"{split}_rank_ic"] = m["ic_spearman"]
    baselines = (metrics.get("test") or {}).get("baselines") or metrics.get("baselines") or {}
    for name, bm in baselines.items() if isinstance(baselines, dict) else ():
        for key, v in (bm.items() if isinstance(bm, dict) else ()):
            if _number(v):  # a volatility run's HAR, EWMA, ... on exactly its test bars
                row[f"baseline_{name}_{key}"] = v
    bt = result.get("backtest") or {}
    strat, bh = bt.get("strategy") or {}, bt.get("buy_and_hold") or {}
    for key in BACKTEST_KEYS:
        if key in strat:
            row[f"bt_{'n_trades' if key == 'trades' else key}"] = strat[key]
    gross = bt.get("strategy_before_costs") or {}
    if "sharpe" in gross:
        row["bt_sharpe_before_costs"] = gross["sharpe"]
    for key in ("sharpe", "total_return"):
        if key in bh:
            row[f"bh_{key}"] = bh[key]
    row["train_seconds"] = result.get("train_seconds")
    row["warmup_seconds"] = result.get("warmup_seconds")  # a worker's one-off start-up, on its first cell only
    row["device"] = result.get("device")  # where the cell trained (cpu, cuda, cuda:N)
    for key in ("host", "node", "attempt", "gpus"):  # Ray cells: the machine, Ray node, attempt and GPU(s)
        if key in result:
            row[key] = result[key]
    row["best_epoch"] = result.get("best_epoch")
    row["epochs_run"] = result.get("epochs_run")
    row["stopped"] = result.get("stopped")
    row["run_dir"] = str(cell_dir(sweep_dir, result["cell_id"]) / "run") if result.get("status") != "pending" else None
    row["error"] = result.get("error")
    row["backtest_error"] = result.get("backtest_error")
    return row


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def throughput(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Cells per hour of wall time (first start to last finish of the finished cells) and cells per device."""
    from datetime import datetime

    done = [r for r in results if r.get("status") == "ok" and r.get("started") and r.get("finished")]
    devices: dict[str, int] = {}
    for r in done:
        devices[str(r.get("device"))] = devices.get(str(r.get("device")), 0) + 1
    if not done:
        return {"cells": 0, "cells_per_hour": None, "devices": devices}
    start = min(datetime.fromisoformat(r["started"]) for r in done)
    end = max(datetime.fromisoformat(r["finished"]) for r in done)
    hours = max((end - start).total_seconds(), 1.0) / 3600  # timestamps have 1 s resolution
    return {"cells": len(done), "cells_per_hour": round(len(done) / hours, 1), "devices": devices}


def results_frame(results: list[dict[str, Any]], grid_keys: list[str], sweep_dir: Path) -> pd.DataFrame:
    """One row per result (see result_row), the same columns in the same order for every cell."""
    import pandas as pd

    rows = [result_row(r, grid_keys, sweep_dir) for r in results]
    df = pd.DataFrame(rows)
    # the same columns in the same order for every cell, whichever finished first
    front = ["cell_id", *grid_keys, *([] if "seed" in grid_keys else ["seed"]), "status"]
    rest = [c for c in df.columns if c not in front]
    metric = [c for c in rest if c.startswith(("val_", "test_", "baseline_", "bt_", "bh_"))]
    tail = [c for c in rest if c not in metric]
    return df[[c for c in front if c in df.columns] + metric + tail]


def write_results_csv(sweep_dir: Path, results: list[dict[str, Any]]) -> Path:
    """Write SWEEP_DIR/sweep_results.csv atomically; return its path."""
    from cryptonorm import atomic

    meta = load_sweep_dir(sweep_dir)
    path = Path(sweep_dir) / RESULTS_CSV
    atomic.write_csv(path, results_frame(results, grid_keys(meta), Path(sweep_dir)))
    return path


def grid_keys(meta: SweepMeta) -> list[str]:
    """The keys that vary between cells: sweep.json's `grid`, then its `zip` keys, in file order."""
    return [*meta.grid, *meta.zip]


def group_keys(meta: SweepMeta) -> list[str]:
    """The keys a table groups by: every grid key but the seed."""
    return [k for k in grid_keys(meta) if k != SEED_KEY]


def grid_values(meta: SweepMeta, key: str) -> list[str]:
    """A grid or zip key's values as shown strings (a zip list's repeats once)."""
    values = meta.grid[key] if key in meta.grid else meta.zip[key]
    return list(dict.fromkeys(show(v) for v in values))


def labelled(df: pd.DataFrame, meta: SweepMeta) -> pd.DataFrame:
    """Grid columns as their shown strings (so 0.1, [64, 32] and 'layer' compare alike)."""
    out = df.copy()
    for k in grid_keys(meta):
        out[k] = out[k].map(show)
    return out


def combos(meta: SweepMeta, keys: list[str]) -> list[dict[str, str]]:
    """Every combination of the values of `keys` that some cell has, in cell order (zip keys move together,
    so their values never combine freely)."""
    cells = meta.cells
    if not cells:
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid_values(meta, k) for k in keys))]
    seen = {tuple(show(c.params.get(k)) for k in keys): None for c in cells}
    return [dict(zip(keys, vals, strict=True)) for vals in seen]


def select(df: pd.DataFrame, combo: dict[str, str]) -> pd.DataFrame:
    """The rows of `df` whose (shown) grid values equal `combo`."""
    import pandas as pd

    mask = pd.Series(True, index=df.index)
    for k, v in combo.items():
        mask &= df[k] == v
    return df[mask]

