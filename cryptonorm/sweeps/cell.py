"""Running one cell: train and backtest it, and write its result.json as the LAST step."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cryptonorm.config import Config, build_config, dump_yaml
from cryptonorm.errors import CryptonormError, DataError
from cryptonorm.pipeline.rebacktest import settings_hash
from cryptonorm.pipeline.resume import resumable
from cryptonorm.sweeps.results import RESULT_FILE, read_result

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class CellTask:
    """What a worker needs for one cell (picklable; the candles travel separately, once per worker)."""

    cell_id: str
    params: dict[str, Any]
    config: dict[str, Any]  # Config.to_dict()
    config_hash: str
    cell_dir: str  # absolute
    data_hash: str
    ship_files: bool = False  # return history.csv/forecasts.csv text too (Ray without a shared filesystem)
    plot: bool = True  # the cell's equity.png; the claims study turns it off (most of a small cell's backtest)


def one_line(e: BaseException) -> str:
    """An error as one line of a table: the project's errors by their message alone (what a person reads
    on the command line too); anything else, a bug, as 'ValueError: first line of the message'."""
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(e, CryptonormError) and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def run_cell(task: CellTask, candles: pd.DataFrame, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and backtest one cell; write result.json LAST (status ok, or failed with a one-line error).
    `where`: keys recorded with the result (a Ray cell's node, host, attempt and GPUs).

    A cell whose training finished is "ok" even when its backtest fails (e.g. a target the strategy cannot
    trade): the forecast metrics stand, `backtest_error` says why there is no backtest, and a re-run does
    not retrain it."""
    from cryptonorm import atomic, pipeline

    warmup = warm_up()  # a worker's first cell would otherwise count seconds of imports in its train_seconds
    t0 = time.time()
    cell_dir = Path(task.cell_dir)
    run_dir = cell_dir / "run"
    result: dict[str, Any] = {
        "cell_id": task.cell_id, "params": task.params, "seed": task.config.get("seed"), "status": "failed",
        "error": None, "config_hash": task.config_hash, "data_hash": task.data_hash, "run_dir": "run",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if warmup:  # this process's one-off start-up, apart from the cell's own train_seconds
        result["warmup_seconds"] = round(warmup, 3)
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / RESULT_FILE).unlink(missing_ok=True)  # running: no verdict until this attempt ends
        cfg = build_config(task.config, source=f"cell {task.cell_id}")
        if run_dir.exists() and not resumable(run_dir, cfg, task.data_hash):
            shutil.rmtree(run_dir)  # leftovers of an attempt that cannot be resumed
        # an attempt killed after an epoch resumes from it, to the result an uninterrupted one gives
        summary = pipeline.train(cfg, run_dir, candles=candles)
        seen = json.loads((run_dir / "run.json").read_text())["data"]["hash"]
        if seen != task.data_hash:
            raise DataError(f"the cell trained on data {seen}, the sweep loaded {task.data_hash}")
        result.update({
            "status": "ok", "device": summary.device, "stopped": summary.stopped, "best_epoch": summary.best_epoch,
            "resumed": summary.resumed or None,
            "epochs_run": _epochs_run(run_dir), "train_seconds": round(summary.seconds, 3),
            "metrics": {k: summary.metrics.get(k) for k in ("target", "horizon", "samples", "val", "test",
                                                            "baselines") if k in summary.metrics},
        })
        try:  # no page per cell: the sweep has its report
            _, bt = pipeline.backtest(run_dir, fmt="png", plot=task.plot)
            m = bt.metrics
            result["backtest"] = {"strategy": m.get("strategy", {}), "buy_and_hold": m.get("buy_and_hold", {})}
            result["backtest_hash"] = settings_hash(cfg)
        except Exception as e:  # the model trained: keep its metrics, say why there is no backtest
            result["backtest_error"] = one_line(e)
    except Exception as e:  # the cell failed; the sweep goes on and a re-run retries it
        result["error"] = one_line(e)
    result["seconds"] = round(time.time() - t0, 3)
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result.update(where or {})
    atomic.write_json(cell_dir / RESULT_FILE, result)
    if task.ship_files:
        result["_files"] = {name: (run_dir / name).read_text() for name in ("history.csv", "forecasts.csv")
                            if (run_dir / name).exists()}
    return result


def needs_backtest(result: dict[str, object], cfg: Config) -> bool:
    """A trained cell whose backtest was made with other backtest settings than the cell's config now."""
    return result.get("backtest_hash") != settings_hash(cfg)


def rebacktest_cell(cdir: Path, cfg: Config, plot: bool = True) -> dict[str, Any]:
    """Backtest a trained cell again with `cfg`'s backtest settings (no training): its run's config.yaml
    gets the new backtest section, run/backtest/ and result.json the new figures."""
    from cryptonorm import atomic, pipeline
    from cryptonorm.pipeline.integrity import record_file

    run_dir, path = cdir / "run", cdir / RESULT_FILE
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    raw["backtest"] = cfg.backtest.model_dump(mode="json")
    atomic.write_text_atomic(run_dir / "config.yaml", dump_yaml(build_config(raw, source=str(run_dir))))
    record_file(run_dir, "config.yaml")  # a deliberate change: the run's integrity check follows it
    _, bt = pipeline.backtest(run_dir, fmt="png", plot=plot)  # as run_cell: no page per cell
    m = bt.metrics
    result = {**(read_result(path) or {}), "backtest_hash": settings_hash(cfg),
              "backtest": {"strategy": m.get("strategy", {}), "buy_and_hold": m.get("buy_and_hold", {})},
              "rebacktested": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic.write_json(path, result)
    return result


_WARM: list[float] = []  # this process's warm-up seconds, once it is done


def warm_up() -> float:
    """The one-off start-up of a worker process, before its first cell: import what training needs and let
    torch load what it loads lazily on first use (torch.use_deterministic_algorithms imports torch._dynamo:
    seconds). Returns the seconds it took the first time, 0.0 on every later call in the same process."""
    if _WARM:
        return 0.0
    t0 = time.perf_counter()
    import torch

    import cryptonorm.features.dataset  # noqa: F401
    import cryptonorm.features.splits  # noqa: F401
    import cryptonorm.learn.training  # noqa: F401
    import cryptonorm.pipeline.backtesting  # noqa: F401

    # the same setting again (no change of state): only the lazy import happens
    torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                       warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
    x = torch.ones(2, 2, requires_grad=True)
    torch.autograd.grad((x @ x).sum(), x)  # autograd's first backward pass starts its engine
    _WARM.append(time.perf_counter() - t0)
    return _WARM[0]


def _epochs_run(run_dir: Path) -> int | None:
    p = run_dir / "history.csv"
    if not p.exists():
        return None
    return max(0, len(p.read_text().strip().splitlines()) - 1)


def failed_result(task: CellTask, error: str) -> dict[str, Any]:
    """A verdict written by the parent when the worker could not write one (it died)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"cell_id": task.cell_id, "params": task.params, "seed": task.config.get("seed"), "status": "failed",
            "error": error, "config_hash": task.config_hash, "data_hash": task.data_hash, "run_dir": "run",
            "started": now, "finished": now, "seconds": None}

