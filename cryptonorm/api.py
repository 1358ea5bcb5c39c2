"""The notebook API: `import cryptonorm as cn`. The same pipeline functions the CLI calls, as Python values.

    cfg = cn.load_config("configs/quickstart.yaml", overrides={"train.epochs": 3})
    run = cn.train(cfg, out="runs/demo")            # force=True replaces a finished run; or cn.load_run(...)
    run.forecasts, run.history, run.metrics          # DataFrames indexed by UTC time, and a dict
    bt = cn.backtest(run, fee_bps=5, threshold=2e-4) # saved forecasts, no retraining
    bt.stats["sharpe"], bt.equity, bt.trades         # a Series; DataFrames indexed by UTC time
    results = cn.sweep("configs/sweeps/norms.yaml")  # the sweep's results table
    candles = cn.fetch(cfg)                          # the candle frame, indexed by UTC time

Errors are the project's exceptions (cryptonorm.errors: ConfigError, DataError, ...), never sys.exit; their
messages name this API's keywords (`force=True`), where the command line names its flags (`--force`).

The whole tour on two months of the offline synthetic market, in a temporary folder (a few seconds on a
CPU; the test suite runs it as a doctest):

>>> import pathlib, tempfile
>>> import cryptonorm as cn
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> cfg = cn.load_config(overrides={"data.dir": str(tmp / "data"), "data.since": "2023-01-01",
...                                 "data.until": "2023-03-01", "model.hidden": [16], "train.epochs": 1,
...                                 "train.device": "cpu"})
>>> candles = cn.fetch(cfg)
>>> list(candles.columns), str(candles.index[0])
(['timestamp', 'open', 'high', 'low', 'close', 'volume'], '2023-01-01 00:00:00+00:00')
>>> run = cn.train(cfg, out=tmp / "demo")
>>> run.finished, list(run.history.columns)
(True, ['train_loss', 'val_loss', 'lr', 'seconds', 'samples_per_s'])
>>> set(run.forecasts["split"].dropna()) == {"val", "test"}      # out-of-sample bars only
True
>>> bt = cn.backtest(run, fee_bps=5)            # written to RUN_DIR/backtest-<hash of the settings>/
>>> bt.path.name.startswith("backtest-"), float(bt.stats["fee_bps"])
(True, 5.0)
>>> cn.load_run(tmp / "demo").config.model.norm
'layer'
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptonorm import api_args as arg
from cryptonorm.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from cryptonorm.config import Config

__all__ = ["BacktestResult", "Run", "backtest", "fetch", "load_config", "load_run", "sweep", "train"]

PathLike = str | Path


def load_config(path: PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A validated config from a YAML file (or the defaults) with dotted-key overrides applied, e.g.
    {"model.norm": "batch", "train.epochs": 3}; exactly what `--set` does on the command line.

    >>> import cryptonorm as cn
    >>> cfg = cn.load_config(overrides={"model.norm": "batch", "train.epochs": 3})
    >>> cfg.model.norm, cfg.train.epochs, cfg.data.exchange
    ('batch', 3, 'synthetic')
    >>> cn.load_config(overrides={"model.norm": "bach"})
    Traceback (most recent call last):
    cryptonorm.errors.ConfigError: config: model.norm: got 'bach'; allowed: ...; did you mean 'batch'?
    """
    from cryptonorm.config import apply_overrides, build_config, moved_keys, read_yaml, set_dotted

    path, overrides = arg.optional_path(path, "path"), arg.overrides_arg(overrides)
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, [])  # a private copy
    for key, value in (overrides or {}).items():
        set_dotted(raw, str(key).split("."), value)
    cfg = build_config(raw, source=str(path) if path is not None else "config")
    for note in moved_keys(raw):  # a key at the place it moved from: the CLI prints it, a notebook warns
        warnings.warn(note.removeprefix("note: "), FutureWarning, stacklevel=2)
    return cfg


def _config(cfg: Config | PathLike) -> Config:
    from cryptonorm.config import Config

    cfg = arg.config_arg(cfg)
    return cfg if isinstance(cfg, Config) else load_config(cfg)


def _utc_index(df: pd.DataFrame, column: str = "timestamp", name: str = "time") -> pd.DataFrame:
    """The frame indexed by a UTC DatetimeIndex made from a millisecond column (the column is kept)."""
    import pandas as pd

    out = df.copy()
    out.index = pd.DatetimeIndex(pd.to_datetime(out[column].to_numpy("int64"), unit="ms", utc=True), name=name)
    return out


@dataclass(frozen=True)
class Run:
    """A run directory: its config and, read on first use, forecasts, history and metrics."""

    path: Path
    config: Config

    @property
    def finished(self) -> bool:
        """True once training wrote run.json (written last)."""
        from cryptonorm.pipeline.rundir import RunDir

        return RunDir(self.path).finished

    @cached_property
    def forecasts(self) -> pd.DataFrame:
        """Out-of-sample forecasts (forecasts.csv): close, forecast, y, outcome, split; UTC time index."""
        from cryptonorm.pipeline.rundir import RunDir

        return _utc_index(RunDir(self.path).forecasts())

    @cached_property
    def history(self) -> pd.DataFrame:
        """One row per epoch: train_loss, val_loss, lr, seconds, samples_per_s; indexed by epoch."""
        from cryptonorm.pipeline.rundir import RunDir

        return RunDir(self.path).history().set_index("epoch")

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """Forecast metrics of the validation and test splits (metrics.json)."""
        from cryptonorm.pipeline.rundir import RunDir

        return RunDir(self.path).metrics()

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Run({str(self.path)!r}, {m.kind}/{m.norm}, target {self.config.target.kind}, "
                f"{'finished' if self.finished else 'unfinished'})")


def load_run(run_dir: PathLike) -> Run:
    """Open a finished run directory (ConfigError if it is not one, DataError if training did not finish)."""
    from cryptonorm.pipeline import finished_run

    run_dir = arg.path_arg(run_dir, "run_dir")
    return Run(run_dir, finished_run(run_dir))


def train(cfg: Config | PathLike, out: PathLike | None = None, *, force: bool = False,
          candles: pd.DataFrame | None = None, track: str | None = None) -> Run:
    """Train like `cryptonorm train` (fetching the offline market if needed); returns the run.
    `out` holding a finished run is refused unless `force=True` (`--force`), which replaces it and what it
    produced; an interrupted run there resumes. `track`: "mlflow" or "tensorboard" logs it (experiment = the
    config's name)."""
    from cryptonorm import pipeline
    from cryptonorm.pipeline.tracking import BACKENDS, check_backend, log_runs

    config = _config(cfg)
    out, candles = arg.optional_path(out, "out"), arg.frame_arg(candles, "candles")
    backend = check_backend(arg.choice_arg(track, "track", BACKENDS, optional=True))
    summary = pipeline.train(config, out, force=arg.bool_arg(force, "force"), candles=candles)
    if backend is not None:
        log_runs(backend, config.name, [(summary.run_dir.name, summary.run_dir)])
    return load_run(summary.run_dir)


@dataclass(frozen=True)
class BacktestResult:
    """Like backtesting.py's result: `stats` (a Series), `equity` and `trades` (UTC-indexed frames).

    equity: one row per bar (position, strategy_return, equity, bh_equity, cost, gap, ...);
    trades: one row per trade, indexed by its entry time; metrics: the full nested dict (metrics.json);
    path: where it was written (None with write=False).
    """

    stats: pd.Series
    equity: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, Any]
    path: Path | None

    def __repr__(self) -> str:
        return f"BacktestResult(path={str(self.path) if self.path else None!r})\n{self.stats.to_string()}"


def backtest(run: Run | PathLike, *, split: str = "test", out: PathLike | None = None, write: bool = True,
             **overrides: Any) -> BacktestResult:
    """Backtest a run's saved forecasts (no retraining) with backtest settings as keywords, e.g.
    `cn.backtest(run, fee_bps=5, threshold=2e-4)`. With no settings and no `out` this is
    `cryptonorm backtest RUN_DIR` (writes RUN_DIR/backtest/); otherwise `--set`: RUN_DIR/backtest-<hash>/
    or `out`. `write=False` writes nothing. `split`: "test" (default) or "val"."""
    from cryptonorm.pipeline.rebacktest import backtest_saved

    if split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got {arg.described(split)}")
    run_dir, write, out = arg.run_arg(run), arg.bool_arg(write, "write"), arg.optional_path(out, "out")
    path, result = backtest_saved(run_dir, overrides, out, split=split, write=write)
    return BacktestResult(stats(result.metrics), _utc_index(result.equity),
                          _utc_index(result.trades, "entry_time", "entry"), result.metrics, path)


def stats(metrics: dict[str, Any]) -> pd.Series:
    """The headline numbers of a backtest as one Series: the strategy's metrics, then buy-and-hold's and
    the costs (prefixed), span and settings."""
    import pandas as pd

    out: dict[str, Any] = {"start": metrics.get("start"), "end": metrics.get("end")}
    out.update(metrics["strategy"])
    out.update({f"before_costs_{k}": metrics["strategy_before_costs"][k] for k in ("total_return", "sharpe")})
    out.update({f"buy_and_hold_{k}": v for k, v in metrics["buy_and_hold"].items()
                if k in ("total_return", "cagr", "sharpe", "max_drawdown")})
    out.update({k: metrics["costs"][k] for k in ("fee_bps", "slippage_bps")})
    out.update({k: metrics.get(k) for k in ("timeframe", "sizing", "gap_bars")})
    return pd.Series(out, name="stats", dtype=object)


def sweep(path: PathLike, *, out: PathLike | None = None, jobs: int = 1, executor: str = "local",
          overrides: Mapping[str, Any] | None = None, track: str | None = None, force: bool = False) -> pd.DataFrame:
    """Run (or resume) a sweep like `cryptonorm sweep`, render its report, and return its results table
    (one row per cell: grid values, status, validation/test metrics, backtest metrics). `track`: log each
    finished cell as one run under one experiment for the sweep. `force`: write into an `out` folder that is
    not a sweep directory (its summary.md and sweep_results.csv are replaced)."""
    import json

    from cryptonorm.pipeline.tracking import BACKENDS
    from cryptonorm.sweeps.orchestrate import check_outputs, sweep_and_report
    from cryptonorm.sweeps.results import collect_results, results_frame
    from cryptonorm.sweeps.spec import load_sweep

    path, out = arg.path_arg(path, "path"), arg.optional_path(out, "out")
    jobs, executor = arg.int_arg(jobs, "jobs"), arg.choice_arg(executor, "executor", ("local", "ray"))
    sets = [f"{k}={json.dumps(v)}" for k, v in arg.overrides_arg(overrides).items()]
    track = arg.choice_arg(track, "track", BACKENDS, optional=True)
    check_outputs(None, track)
    spec = load_sweep(path, sets)
    done = sweep_and_report(spec, out, jobs=jobs, executor=executor, track=track, force=arg.bool_arg(force, "force"))
    return results_frame(collect_results(done.outcome.sweep_dir), spec.grid_keys, done.outcome.sweep_dir)


def fetch(cfg: Config | PathLike | None = None, **data: Any) -> pd.DataFrame:
    """Download (or generate, for the synthetic market) the candles of a config into the store, and return
    them: timestamp (ms), open, high, low, close, volume, indexed by UTC time. Keywords set `data.*` keys:
    `cn.fetch(exchange="binance", symbol="BTC/USDT", timeframe="1h", since="2024-01-01")`."""
    from cryptonorm import pipeline
    from cryptonorm.config import build_config
    from cryptonorm.data import store

    cfg = arg.config_arg(cfg, optional=True)
    if isinstance(cfg, (str, Path)) or cfg is None:
        cfg = load_config(cfg, {f"data.{k}": v for k, v in data.items()})
    elif data:
        raw = cfg.to_dict()
        cfg = build_config({**raw, "data": {**raw["data"], **data}}, source="cn.fetch")
    pipeline.fetch(cfg)
    return _utc_index(store.load_candles(cfg))

