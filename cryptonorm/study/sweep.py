"""Sweeps: a grid of experiments over dotted config keys, run in parallel, resumable.

A sweep file names a base experiment config and a grid:

    name: norms
    base: ../quickstart.yaml      # relative to the sweep file
    set: {train.epochs: 5}        # fixed overrides for every cell (optional)
    grid:
      model.kind: [mlp, lstm]
      model.norm: [none, batch, layer, group]
      seed: [0, 1, 2, 3, 4]

The cells are the cartesian product of the grid. Every cell's config is validated before anything runs.
All cells train on the very same candles: the parent loads (or fetches) them once, records their hash,
and hands the frame to every worker; each cell's run.json must show that hash. Grid keys under `data.`
and `split.` are refused for that reason, so the top-level `seed` (init, dropout, batch order) is the only
randomness a seed grid varies.

Layout of SWEEP_DIR (default sweeps/<name>/):
    sweep.json               the resolved sweep: grid, cells, data hash (written before any cell runs)
    cells/<cell-id>/run/     the cell's run directory (pipeline.train + pipeline.backtest)
    cells/<cell-id>/result.json   written atomically as the cell's LAST step: status ok or failed
    sweep_results.csv        one row per cell
    summary.md, plots/       see sweep_report.py

Resuming: a cell whose result.json says "ok" for the same config (the cell id holds its hash) and the same
data hash is skipped; failed, unfinished (no result.json) and stale cells run again.

Executors: "local" runs `jobs` processes (concurrent.futures, "spawn" context; jobs=1 runs in this
process); each sets torch to max(1, cores // jobs) threads unless the config sets train.threads. With
train.device auto/cuda on a CUDA machine, all local workers share the one GPU (each holds its own copy of
the small dataset and model there). "ray" runs each cell as a Ray task (1 CPU each) on a local Ray
instance with `jobs` CPUs, or on an existing cluster (`address`). Ray gives no GPU to a task that does not
ask for one, so Ray cells train on the CPU. On a multi-node cluster SWEEP_DIR should be on a shared
filesystem; otherwise the parent writes each cell's result.json, history.csv and forecasts.csv from what
the task returns, which is all the report needs.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cryptonorm.config import Config, apply_overrides, build_config, parse_override, read_yaml, set_dotted
from cryptonorm.errors import ConfigError, CryptonormError, DataError, UsageError

if TYPE_CHECKING:
    import pandas as pd

EventFn = Callable[[dict[str, Any]], None]

# Grid keys under these sections would give cells different candles or splits: refused.
FIXED_SECTIONS = ("data", "split")
# Left out of a cell's config hash: they do not change what is computed.
UNHASHED_KEYS = (("name",), ("train", "threads"))
RESULT_FILE = "result.json"
SWEEP_FILE = "sweep.json"
RESULTS_CSV = "sweep_results.csv"
FORECAST_KEYS = ("mse", "mae", "directional_accuracy", "ic_pearson", "ic_spearman", "accuracy", "log_loss", "auc")
BACKTEST_KEYS = ("sharpe", "sortino", "total_return", "cagr", "volatility", "max_drawdown", "trades", "win_rate",
                 "hit_rate", "exposure", "turnover", "fees_paid")


# ---------------------------------------------------------------- the sweep file


class SweepSpec(BaseModel):
    """A sweep file: a base config, fixed overrides and a grid over dotted keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str  # names the default sweep directory sweeps/<name>/
    base: str  # the experiment config every cell starts from, relative to the sweep file
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")  # dotted key -> value, every cell
    grid: dict[str, list[Any]]  # dotted key -> values; the cells are the cartesian product
    reference: str | None = None  # reference norm of the paired tests; default the first model.norm listed
    description: str = ""  # free text, shown in summary.md

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", v):
            raise ValueError(f"got {v!r}; use letters, digits, '_', '.', '-' (it names the sweep directory)")
        return v


@dataclass(frozen=True)
class Cell:
    """One grid point: its values, its validated config and a stable id (readable part + config hash)."""

    id: str
    params: dict[str, Any]  # grid key -> value, in grid order
    config: Config
    config_hash: str

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.params.items())


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the spec, where it came from, and every cell, validated."""

    spec: SweepSpec
    path: Path  # the sweep file
    base_path: Path
    cli_overrides: tuple[str, ...]
    cells: list[Cell]

    @property
    def grid_keys(self) -> list[str]:
        return list(self.spec.grid)

    def default_dir(self) -> Path:
        return Path("sweeps") / self.spec.name


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and validate a sweep file and every cell's config; ConfigError (one line) names the problem."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_spec_error(e)}") from None
    if not spec.grid:
        raise ConfigError(f"{path}: grid is empty; give at least one dotted key with a list of values, "
                          "e.g. model.norm: [none, layer]")
    for key, values in spec.grid.items():
        _check_key(key, f"{path}: grid key {key!r}")
        if key.split(".")[0] in FIXED_SECTIONS:
            raise ConfigError(f"{path}: grid key {key!r}: every cell must see the same candles and splits, so "
                              f"{'/'.join(FIXED_SECTIONS)} keys cannot vary; put them under `set:` (one value for "
                              "all cells) or run one sweep per value")
        if not values:
            raise ConfigError(f"{path}: grid.{key} is an empty list; give at least one value")
        dumped = [json.dumps(v, sort_keys=True, default=str) for v in values]
        dupes = sorted({d for d in dumped if dumped.count(d) > 1})
        if dupes:
            raise ConfigError(f"{path}: grid.{key} lists {', '.join(dupes)} more than once")
    for key in spec.overrides:
        _check_key(key, f"{path}: set key {key!r}")
    if spec.reference is not None:
        norms = [str(v) for v in spec.grid.get("model.norm", [])]
        if spec.reference not in norms:
            raise ConfigError(f"{path}: reference {spec.reference!r} must be one of the model.norm grid values "
                              f"({', '.join(norms) or 'model.norm is not a grid key'})")
    cli = tuple(overrides)
    for item in cli:
        parts, _ = parse_override(item)
        key = ".".join(parts)
        _check_key(key, f"--set {item!r}")
        if key in spec.grid:
            raise ConfigError(f"--set {item!r}: {key} is a grid key of {path}; change the grid instead")
    base_path = (path.parent / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
    if not base_path.exists():
        raise ConfigError(f"{path}: base config {spec.base!r} not found (looked for {base_path}); the path is "
                          "relative to the sweep file")
    base_raw = read_yaml(base_path)
    for key, value in spec.overrides.items():
        _set_dotted(base_raw, key, value)
    base_raw = apply_overrides(base_raw, cli)
    if "name" not in spec.overrides and not any(o.startswith("name=") for o in cli):
        base_raw["name"] = spec.name
    cells = []
    seen: set[str] = set()
    for combo in itertools.product(*spec.grid.values()):
        params = dict(zip(spec.grid, combo, strict=True))
        raw = json.loads(json.dumps(base_raw, default=str))  # a deep copy per cell
        for key, value in params.items():
            _set_dotted(raw, key, value)
        label = " ".join(f"{k}={_show(v)}" for k, v in params.items())
        cfg = build_config(raw, source=f"{path} cell [{label}]")
        chash = config_hash(cfg)
        cell = Cell(cell_id(params, chash), params, cfg, chash)
        if cell.id in seen:  # two grid values that validate to the same config, e.g. 1 and 1.0
            raise ConfigError(f"{path}: cell [{label}] has the same config as another cell; remove the duplicate "
                              "grid value")
        seen.add(cell.id)
        cells.append(cell)
    first = cells[0].config
    for c in cells[1:]:
        for section in FIXED_SECTIONS:
            if getattr(c.config, section) != getattr(first, section):  # pragma: no cover - guarded above
                raise ConfigError(f"{path}: cell [{c.label}] has other {section} settings than the first cell")
    return Sweep(spec, path, base_path, cli, cells)


def _spec_error(e: ValidationError) -> str:
    errors = e.errors()
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])  # a typo explains a "missing"
    loc = [str(p) for p in err["loc"]]
    allowed = ["name", "base", "set", "grid", "reference", "description"]
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        close = difflib.get_close_matches(loc[0], allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {loc[0]!r}: {hint}allowed in a sweep file: {', '.join(allowed)}"
    if err["type"] == "missing":
        what = {"name": "a name for the sweep (it names sweeps/<name>/)",
                "base": "the experiment config every cell starts from, e.g. base: ../quickstart.yaml",
                "grid": "the grid, e.g. grid: {model.norm: [none, layer], seed: [0, 1]}"}
        return f"{'.'.join(loc)}: required: {what.get(loc[0], 'give it')}"
    key = ".".join(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[0] == "grid" and len(loc) >= 2 and err["type"] == "list_type":
        return f"{key}: expected a list of values, got {err.get('input')!r}; write e.g. {loc[1]}: [a, b]"
    if loc == ["grid"] or loc == ["set"]:
        return f"{key}: expected a mapping of dotted keys, got {err.get('input')!r}"
    return f"{key}: {msg} (got {err.get('input')!r})"


def _check_key(key: str, where: str) -> None:
    """A dotted key must name a field of Config; a dict field (exchange_options) takes any sub-key."""
    parts = key.split(".")
    model: type[BaseModel] = Config
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join([*parts[:i], close[0]])!r}? " if close else ""
            section = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"{where}: unknown config key; {hint}allowed in {section}: {', '.join(fields)}")
        ann = fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return
        model = ann


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    set_dotted(raw, key.split("."), value)


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def config_hash(cfg: Config) -> str:
    """Hash of everything that changes what a cell computes (not its name or thread count)."""
    d = cfg.to_dict()
    for path in UNHASHED_KEYS:
        node = d
        for p in path[:-1]:
            node = node[p]
        node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def cell_id(params: dict[str, Any], chash: str) -> str:
    """Readable and stable: 'kind-mlp_norm-layer_seed-0_<config hash>'."""
    parts = []
    for key, value in params.items():
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", _show(value)).strip("-") or "x"
        parts.append(f"{key.split('.')[-1]}-{slug}")
    readable = "_".join(parts)[:80].rstrip("_-")
    return f"{readable}_{chash}"


# ---------------------------------------------------------------- running one cell


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


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def run_cell(task: CellTask, candles: pd.DataFrame) -> dict[str, Any]:
    """Train and backtest one cell; write result.json LAST (status ok, or failed with a one-line error)."""
    from cryptonorm import pipeline

    t0 = time.time()
    cell_dir = Path(task.cell_dir)
    run_dir = cell_dir / "run"
    result: dict[str, Any] = {
        "cell_id": task.cell_id, "params": task.params, "seed": task.config.get("seed"), "status": "failed",
        "error": None, "config_hash": task.config_hash, "data_hash": task.data_hash, "run_dir": "run",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / RESULT_FILE).unlink(missing_ok=True)  # running: no verdict until this attempt ends
        if run_dir.exists():
            shutil.rmtree(run_dir)  # leftovers of a killed or failed attempt
        cfg = build_config(task.config, source=f"cell {task.cell_id}")
        summary = pipeline.train(cfg, run_dir, candles=candles)
        seen = json.loads((run_dir / "run.json").read_text())["data"]["hash"]
        if seen != task.data_hash:
            raise DataError(f"the cell trained on data {seen}, the sweep loaded {task.data_hash}")
        _, bt = pipeline.backtest(run_dir)
        m = bt.metrics
        result.update({
            "status": "ok", "device": summary.device, "stopped": summary.stopped, "best_epoch": summary.best_epoch,
            "epochs_run": _epochs_run(run_dir), "train_seconds": round(summary.seconds, 3),
            "metrics": {k: summary.metrics.get(k) for k in ("target", "horizon", "samples", "val", "test")},
            "backtest": {"strategy": m.get("strategy", {}), "buy_and_hold": m.get("buy_and_hold", {})},
        })
    except Exception as e:  # the cell failed; the sweep goes on and a re-run retries it
        result["error"] = one_line(e)
    result["seconds"] = round(time.time() - t0, 3)
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    pipeline.write_json(cell_dir / RESULT_FILE, result)
    if task.ship_files:
        result["_files"] = {name: (run_dir / name).read_text() for name in ("history.csv", "forecasts.csv")
                            if (run_dir / name).exists()}
    return result


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


# worker-process state, set once per process by the pool initializer
_WORKER: dict[str, Any] = {}


def _init_worker(candles: pd.DataFrame, threads: int, parent_pid: int) -> None:
    import torch

    _WORKER["candles"] = candles
    torch.set_num_threads(threads)

    def watchdog() -> None:  # a SIGKILLed parent cannot stop its pool: leave instead of training on as an orphan
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watchdog, daemon=True, name="cryptonorm-parent-watchdog").start()


def _pool_cell(task: CellTask) -> dict[str, Any]:
    return run_cell(task, _WORKER["candles"])


def _ray_cell(task: CellTask, candles: pd.DataFrame, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return run_cell(task, candles)


# ---------------------------------------------------------------- the sweep


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


def cell_dir(sweep_dir: Path, cell: Cell | str) -> Path:
    return sweep_dir / "cells" / (cell if isinstance(cell, str) else cell.id)


def read_result(path: Path) -> dict[str, Any] | None:
    """A cell's result.json, or None when it is missing or unreadable (then the cell runs again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_done(result: dict[str, Any] | None, cell: Cell, data_hash: str) -> bool:
    return (result is not None and result.get("status") == "ok" and result.get("config_hash") == cell.config_hash
            and result.get("data_hash") == data_hash)


def cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def prepare_data(sweep: Sweep, on_event: EventFn | None = None) -> tuple[pd.DataFrame, str]:
    """Load the candles every cell shares (fetching what is missing), and their hash."""
    from cryptonorm import pipeline
    from cryptonorm.data.candles import data_hash

    cfg = sweep.cells[0].config
    if not pipeline.have_candles(cfg):
        if on_event:
            on_event({"event": "fetch", "exchange": cfg.data.exchange, "symbols": cfg.data.symbols})
        pipeline.fetch(cfg)
    candles = pipeline.load_candles(cfg)
    return candles, data_hash(candles)


def run_sweep(sweep: Sweep, sweep_dir: Path | None = None, *, jobs: int = 1, executor: str = "local",
              address: str | None = None, on_event: EventFn | None = None) -> SweepOutcome:
    """Run every cell not finished yet; write sweep.json, each cell's result.json and sweep_results.csv."""
    from cryptonorm import pipeline

    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if address and executor != "ray":
        raise UsageError("--address is for --executor ray")
    ray = _import_ray() if executor == "ray" else None
    t0 = time.time()
    sweep_dir = Path(sweep_dir or sweep.default_dir()).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _lock(sweep_dir):
        candles, dhash = prepare_data(sweep, on_event)
        first = sweep.cells[0].config
        pipeline.write_json(sweep_dir / SWEEP_FILE, {
            "name": sweep.spec.name, "description": sweep.spec.description, "sweep_file": str(sweep.path.resolve()),
            "base": str(sweep.base_path.resolve()), "set": sweep.spec.overrides, "cli_set": list(sweep.cli_overrides),
            "grid": sweep.spec.grid, "reference": sweep.spec.reference, "horizon": first.target.horizon,
            "target": first.target.kind,
            "data": {"hash": dhash, "rows": len(candles), "path": str(pipeline.candle_path(first)),
                     "first": int(candles["timestamp"].iloc[0]), "last": int(candles["timestamp"].iloc[-1])},
            "cells": [{"id": c.id, "params": c.params, "seed": c.config.seed} for c in sweep.cells],
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        todo: list[CellTask] = []
        stale = 0
        for c in sweep.cells:
            prev = read_result(cell_dir(sweep_dir, c) / RESULT_FILE)
            if is_done(prev, c, dhash):
                continue
            stale += prev is not None and prev.get("status") == "ok"
            todo.append(CellTask(c.id, c.params, c.config.to_dict(), c.config_hash, str(cell_dir(sweep_dir, c)),
                                 dhash, ship_files=executor == "ray"))
        skipped = len(sweep.cells) - len(todo)
        emit = on_event or (lambda _: None)
        emit({"event": "start", "total": len(sweep.cells), "todo": len(todo), "skipped": skipped, "stale": stale,
              "data_hash": dhash, "sweep_dir": str(sweep_dir)})
        counts = {"done": 0, "failed": 0}

        def finished(task: CellTask, result: dict[str, Any]) -> None:
            _land(task, result)
            counts["done"] += 1
            counts["failed"] += result.get("status") != "ok"
            emit({"event": "cell", "cell": task.cell_id, "label": _label(task.params), "status": result["status"],
                  "error": result.get("error"), "done": counts["done"], "failed": counts["failed"],
                  "todo": len(todo)})

        threads = max(1, cores() // jobs)
        if ray is not None:
            _run_ray(ray, todo, candles, jobs, address, threads, finished)
        elif jobs == 1:
            _run_inline(todo, candles, threads, finished)
        else:
            _run_pool(todo, candles, jobs, threads, finished)
        results = collect_results(sweep_dir)
        write_results_csv(sweep_dir, results)
    failed = sum(r.get("status") != "ok" for r in results)
    return SweepOutcome(sweep_dir, dhash, len(sweep.cells), skipped, len(todo), failed, results, time.time() - t0)


def _label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_show(v)}" for k, v in params.items())


def _land(task: CellTask, result: dict[str, Any]) -> None:
    """Make sure the verdict (and, from Ray, the files the report reads) exist on this machine."""
    from cryptonorm import pipeline

    cdir = Path(task.cell_dir)
    files = result.pop("_files", None) or {}
    for name, text in files.items():
        target = cdir / "run" / name
        if not target.exists():
            pipeline.write_text_atomic(target, text)
    if read_result(cdir / RESULT_FILE) is None:
        pipeline.write_json(cdir / RESULT_FILE, result)


@contextlib.contextmanager
def _lock(sweep_dir: Path) -> Iterator[None]:
    """One sweep process per directory (the OS drops the lock if that process is killed)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(sweep_dir / ".sweep.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another sweep is running in {sweep_dir}; wait for it or use --out") from None
    try:
        yield
    finally:
        lock.release()


def _run_inline(todo: list[CellTask], candles: pd.DataFrame, threads: int,
                finished: Callable[[CellTask, dict[str, Any]], None]) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for task in todo:
            finished(task, run_cell(task, candles))
    finally:
        torch.set_num_threads(before)


def _run_pool(todo: list[CellTask], candles: pd.DataFrame, jobs: int, threads: int,
              finished: Callable[[CellTask, dict[str, Any]], None]) -> None:
    """`jobs` spawned processes; at most `jobs` cells in flight, so a dead worker costs only those cells."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    if not todo:
        return
    ctx = mp.get_context("spawn")
    queue = list(reversed(todo))

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                                   initargs=(candles, threads, os.getpid()))

    pool = new_pool()
    running: dict[Future[dict[str, Any]], CellTask] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop()
                running[pool.submit(_pool_cell, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                task = running.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    result = failed_result(task, "worker process died (out of memory or killed?); run the sweep "
                                                 "again to retry")
                except Exception as e:
                    result = failed_result(task, one_line(e))
                finished(task, result)
            if broken:  # every in-flight cell of a broken pool is lost: record them and start a fresh pool
                for fut, task in list(running.items()):
                    finished(task, failed_result(task, "worker pool broke while this cell ran; run the sweep "
                                                       "again to retry"))
                    running.pop(fut)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install cryptonorm[ray]") from None
    return ray


def _run_ray(ray: Any, todo: list[CellTask], candles: pd.DataFrame, jobs: int, address: str | None,
             threads: int, finished: Callable[[CellTask, dict[str, Any]], None]) -> None:
    """Each cell is a Ray task with 1 CPU; the candles go into the object store once."""
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        except Exception as e:
            raise CryptonormError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                                  f"{one_line(e)}") from e
        started = True
    try:
        if not todo:
            return
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_cell)
        ref = ray.put(candles)
        per_task = 1 if address else threads
        pending = {remote.remote(task, ref, per_task): task for task in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for r in done:
                task = pending.pop(r)
                try:
                    result = ray.get(r)
                except Exception as e:  # the task's process died; run_cell itself never raises
                    result = failed_result(task, f"Ray task failed: {one_line(e)}")
                finished(task, result)
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- results


def load_sweep_dir(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json of a sweep directory (what `cryptonorm report` starts from)."""
    p = Path(sweep_dir) / SWEEP_FILE
    if not p.exists():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}); pass the directory "
                          "`cryptonorm sweep` wrote, e.g. sweeps/norms")
    try:
        meta = json.loads(p.read_text())
    except ValueError as e:
        raise DataError(f"{p} is damaged ({e}); run the sweep again to rewrite it") from None
    return dict(meta)


def collect_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """One result per cell listed in sweep.json; cells without a verdict are 'pending'."""
    meta = load_sweep_dir(sweep_dir)
    dhash = meta["data"]["hash"]
    out = []
    for c in meta["cells"]:
        r = read_result(cell_dir(Path(sweep_dir), c["id"]) / RESULT_FILE)
        if r is None or (r.get("status") == "ok" and r.get("data_hash") != dhash):
            r = {"cell_id": c["id"], "params": c["params"], "seed": c["seed"], "status": "pending", "error": None}
        out.append(r)
    return out


def result_row(result: dict[str, Any], grid_keys: list[str], sweep_dir: Path) -> dict[str, Any]:
    """Flatten one result into a CSV row: grid keys, seed, status, metrics, backtest, timing, run dir."""
    row: dict[str, Any] = {"cell_id": result["cell_id"]}
    params = result.get("params", {})
    for k in grid_keys:
        v = params.get(k)
        row[k] = _show(v) if isinstance(v, (list, dict)) else v
    row["seed"] = result.get("seed")
    row["status"] = result.get("status")
    metrics = result.get("metrics") or {}
    for split in ("val", "test"):
        m = metrics.get(split) or {}
        for key in FORECAST_KEYS:
            if key in m:
                row[f"{split}_{key}"] = m[key]
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
    row["best_epoch"] = result.get("best_epoch")
    row["epochs_run"] = result.get("epochs_run")
    row["stopped"] = result.get("stopped")
    row["run_dir"] = str(cell_dir(sweep_dir, result["cell_id"]) / "run") if result.get("status") != "pending" else None
    row["error"] = result.get("error")
    return row


def results_frame(results: list[dict[str, Any]], grid_keys: list[str], sweep_dir: Path) -> pd.DataFrame:
    import pandas as pd

    rows = [result_row(r, grid_keys, sweep_dir) for r in results]
    df = pd.DataFrame(rows)
    # the same columns in the same order for every cell, whichever finished first
    front = ["cell_id", *grid_keys, *([] if "seed" in grid_keys else ["seed"]), "status"]
    rest = [c for c in df.columns if c not in front]
    metric = [c for c in rest if c.startswith(("val_", "test_", "bt_", "bh_"))]
    tail = [c for c in rest if c not in metric]
    return df[[c for c in front if c in df.columns] + metric + tail]


def write_results_csv(sweep_dir: Path, results: list[dict[str, Any]]) -> Path:
    from cryptonorm import pipeline

    meta = load_sweep_dir(sweep_dir)
    path = Path(sweep_dir) / RESULTS_CSV
    pipeline.write_csv(path, results_frame(results, list(meta["grid"]), Path(sweep_dir)))
    return path
