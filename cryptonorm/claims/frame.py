"""The per-cell frame a claim's rule is evaluated on: grid values, seed, forecast and derived metrics.

Forecast metrics come from each cell's result.json (`test_mse`, `val_ic_spearman`, ...). Derived metrics
(claims.spec.DERIVED_METRICS) are read from the cell's run directory: history.csv (one row per epoch:
train_loss, val_loss) and forecasts.csv (the out-of-sample bars). `steps_to_target` needs every cell: its
target is the worst typical best validation loss of the claim, max over the other grid combinations of the
median over seeds of best_val_loss, fixed by this rule before the run, so every group can reach it and
the metric measures speed, not the final level.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.claims.spec import Claim, grid_values
from cryptonorm.evaluate.keys import SEED_KEY
from cryptonorm.sweeps.results import cell_dir, collect_results
from cryptonorm.sweeps.spec import show as _show
from cryptonorm.timeframes import parse_date

NON_FINITE = "non_finite_loss"


def cell_frame(claim: Claim, sweep_dir: Path) -> pd.DataFrame:
    """One row per cell of the claim's sweep: keys as shown strings, status, metrics (NaN where missing)."""
    assert claim.sweep is not None
    keys = list(grid_values(claim.sweep))
    configs = {c.id: c.config for c in claim.sweep.cells}
    rows = []
    for r in collect_results(sweep_dir):
        params = r.get("params") or {}
        row: dict[str, Any] = {k: _show(params.get(k)) for k in keys}
        row.update({"cell_id": r["cell_id"], "status": r.get("status")})
        if r.get("status") == "ok":
            metrics = r.get("metrics") or {}
            for split in ("val", "test"):
                for name, value in (metrics.get(split) or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        row[f"{split}_{name}"] = float(value)
                # volatility runs: each baseline's metrics on the same bars (pipeline/vol.py)
                for base, values in ((metrics.get(split) or {}).get("baselines") or {}).items():
                    for name, value in (values or {}).items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            row[f"{split}_baseline_{base}_{name}"] = float(value)
            har = row.get("test_baseline_har_qlike")
            if har and "test_qlike" in row:
                row["qlike_vs_har"] = row["test_qlike"] / har - 1.0
            row["train_seconds"] = r.get("train_seconds")
            cfg = configs.get(r["cell_id"])
            n_train = ((metrics.get("samples") or {}).get("train")) or 0
            batch = cfg.train.batch_size if cfg is not None else 0
            row.update(_history_metrics(cell_dir(sweep_dir, r["cell_id"]) / "run", r.get("stopped"), n_train, batch))
            start = cfg.split.test_start if cfg is not None else None
            row["decay_mse"] = _decay(cell_dir(sweep_dir, r["cell_id"]) / "run", start)
        rows.append(row)
    df = pd.DataFrame(rows)
    if "steps_to_target" in df.columns or "_curve" in df.columns:
        df = with_steps_to_target(df, keys)
    return df


def _history_metrics(run_dir: Path, stopped: Any, n_train: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"diverged": 1.0 if stopped == NON_FINITE else 0.0}
    h = None
    with contextlib.suppress(OSError, ValueError):
        h = pd.read_csv(run_dir / "history.csv")
    if h is None or not len(h) or "val_loss" not in h.columns:
        return out
    val = pd.to_numeric(h["val_loss"], errors="coerce").to_numpy("float64")
    train = pd.to_numeric(h["train_loss"], errors="coerce").to_numpy("float64")
    finite = np.isfinite(val)
    if finite.any():
        best = int(np.nanargmin(np.where(finite, val, np.nan)))
        out["best_val_loss"] = float(val[best])
        gap = val[best] / train[best] - 1.0 if math.isfinite(train[best]) and train[best] > 0 else math.nan
        out["gap_at_best"] = float(gap)
    out["final_val_loss"] = float(val[-1]) if finite[-1] and stopped != NON_FINITE else math.nan
    # optimizer steps after each epoch: a "step" column if training records one, else epochs x steps/epoch
    if "step" in h.columns:
        steps = pd.to_numeric(h["step"], errors="coerce").to_numpy("float64")
    else:
        per_epoch = math.ceil(n_train / batch) if n_train and batch else math.nan
        steps = pd.to_numeric(h["epoch"], errors="coerce").to_numpy("float64") * per_epoch
    out["_curve"] = (steps, val)  # kept for steps_to_target, dropped before the frame is returned
    return out


def with_steps_to_target(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Fill steps_to_target: the first step whose val loss <= the claim's target (see the module docstring).

    A cell that never reaches it is censored at its last step + one epoch's steps (a lower bound)."""
    df = df.copy()
    if "_curve" not in df.columns or "best_val_loss" not in df.columns:
        df["steps_to_target"] = math.nan
        return df.drop(columns=["_curve"], errors="ignore")
    ok = df[(df["status"] == "ok") & df["best_val_loss"].notna()]
    groups = [k for k in keys if k != SEED_KEY]
    medians = ok.groupby(groups)["best_val_loss"].median() if groups else ok["best_val_loss"].agg(["median"])
    target = float(np.max(medians.to_numpy())) if len(ok) else math.nan
    out = []
    for curve in df["_curve"]:
        if not isinstance(curve, tuple) or not math.isfinite(target):
            out.append(math.nan)
            continue
        steps, val = curve
        hit = np.flatnonzero(np.isfinite(val) & (val <= target))
        if len(hit):
            out.append(float(steps[hit[0]]))
        else:
            last = float(steps[-1]) if len(steps) else math.nan
            per_epoch = float(steps[0]) if len(steps) else math.nan
            out.append(last + per_epoch)
    df["steps_to_target"] = out
    df.attrs["steps_target"] = target
    return df.drop(columns=["_curve"])


def _decay(run_dir: Path, test_start: str | None = None) -> float:
    """Test MSE of the last third of the test bars (in time) / that of the first third.

    With `test_start` (split.test_start) only test bars from that date on count, so a walk-forward run,
    whose out-of-sample forecasts begin earlier, is measured on the same bars as a fixed-split run."""
    try:
        f = pd.read_csv(run_dir / "forecasts.csv", usecols=["timestamp", "forecast", "y", "split"])
    except (OSError, ValueError):
        return math.nan
    t = f[(f["split"] == "test") & f["forecast"].notna() & f["y"].notna()].sort_values("timestamp")
    if test_start:
        t = t[t["timestamp"] >= parse_date(test_start)]
    n = len(t) // 3
    if n < 2:
        return math.nan
    err = (t["forecast"].to_numpy("float64") - t["y"].to_numpy("float64")) ** 2
    early, late = float(err[:n].mean()), float(err[-n:].mean())
    return late / early if early > 0 else math.nan
