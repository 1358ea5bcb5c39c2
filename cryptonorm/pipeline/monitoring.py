"""The monitor step: per bar, how far a saved run's inputs have drifted from what it was trained on.

Two signals, over the last N windows ending at each bar:
  - the network's own: each batch-statistics layer's input against its running statistics
    (`cryptonorm.learn.bn_monitor`), for models with BatchNorm / batch renorm;
  - the inputs': PSI and KS of each scaled input feature against the training rows (the END rows of the
    run's training windows, recomputed from the run's config and data, scaled with its saved scaler)
    (`cryptonorm.evaluate.drift`), for any model.
`alarm` is the BatchNorm alarm when the model has such layers, else the mean input PSI (`signal` says which).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryptonorm.atomic import write_csv
from cryptonorm.config import Config, build_config
from cryptonorm.data.store import load_candles, load_funding
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.pipeline.fitting import is_tabular, load_tabular, model_file
from cryptonorm.pipeline.forecasting import check_model_fits
from cryptonorm.pipeline.rundir import MODEL, RunDir
from cryptonorm.timeframes import timeframe_ms

if TYPE_CHECKING:
    from cryptonorm.features.dataset import Dataset
    from cryptonorm.learn.models import Forecaster

MONITOR_CSV = "monitor.csv"
MONITOR_HTML = "monitor.html"
MONITOR_DIR = "monitor"  # default output folder inside the run directory


@dataclass(eq=False)
class MonitorResult:
    """What `monitor` computed and wrote."""

    frame: pd.DataFrame  # one row per bar with a complete input window (the columns of monitor.csv)
    signal: str  # "batchnorm" or "psi": what the `alarm` column is
    layers: list[str]  # the batch-statistics layers monitored (empty: none in the model)
    features: list[str]
    window: int
    csv: Path
    html: Path | None  # None when plotly is not installed
    notes: list[str]

    @property
    def latest(self) -> float:
        """The alarm at the last bar (what `--fail-above` is compared with)."""
        return float(self.frame["alarm"].iloc[-1])


def _check_timeframe(candles: pd.DataFrame, cfg: Config, data_file: Path) -> None:
    ts = candles["timestamp"].to_numpy(dtype="int64")
    if len(ts) < 2:
        return
    step, want = int(np.median(np.diff(ts))), timeframe_ms(cfg.data.timeframe)
    if step != want:
        raise ConfigError(f"--data {data_file} holds bars {step // 60000} minutes apart but the run was trained on "
                          f"{cfg.data.timeframe} bars; pass a {cfg.data.timeframe} candle file")


@dataclass(eq=False)
class MonitorInputs:
    """A saved run's model, the watched data scaled with its scaler, and the training rows."""

    cfg: Config
    model: Forecaster | None  # None for a tabular run (ridge, LightGBM): no layers, `forecast` gives forecasts
    forecast: Callable[[Dataset, np.ndarray], np.ndarray] | None  # a tabular run's (dataset, END rows) -> (n,)
    ds: Dataset  # the --data candles: every bar with a complete input window in test_idx
    train_rows: np.ndarray  # (n_train, F) scaled feature rows at the END of each training window
    features: list[str]
    vol_floor: float | None = None  # a volatility run's variance floor (scaler.json), applied as `predict` does


def load_inputs(run_dir: Path, data_file: Path) -> MonitorInputs:
    """Read the run (config, scaler, model), rebuild its training rows from its own data and split, and
    prepare `data_file` with the run's config and scaler; ConfigError for a file of another timeframe or
    one that cannot give the run's features."""
    from cryptonorm.features import dataset, splits
    from cryptonorm.features.scaling import Scaler
    from cryptonorm.learn import checkpoints

    rd = RunDir(run_dir)
    cfg = rd.finished_config()
    meta = rd.scaler(model_file(cfg))
    scaler = Scaler.from_dict(meta["scaler"])
    rd.verify()
    model: Forecaster | None = None
    forecast = None
    if is_tabular(cfg):
        forecast, ckpt = load_tabular(rd.path, cfg)
    else:
        from cryptonorm.learn.device import resolve_device

        model, ckpt = checkpoints.load_checkpoint(rd / MODEL)
        model.to(resolve_device(cfg.train.device))  # where `predict` runs it
    check_model_fits(run_dir, cfg, meta, ckpt)
    names = list(meta["features"])
    candles = load_candles(cfg)
    own = dataset.prepare(candles, cfg, load_funding(cfg, candles["timestamp"]))
    train_rows = splits.apply(own, scaler, names).X[splits.split(own, cfg).train_idx]  # (n_train, F)
    data = {**cfg.to_dict()["data"], "file": str(data_file), "since": None, "until": None}
    new_cfg = build_config({**cfg.to_dict(), "data": data})
    try:  # a --data file that cannot give the run's features is a usage error (exit 2)
        candles = load_candles(new_cfg)
        _check_timeframe(candles, cfg, data_file)
        ds = splits.apply(dataset.prepare(candles, new_cfg, load_funding(new_cfg, candles["timestamp"])), scaler, names)
    except DataError as e:
        raise ConfigError(str(e)) from None
    return MonitorInputs(cfg=cfg, model=model, forecast=forecast, ds=ds, train_rows=train_rows, features=names,
                         vol_floor=meta.get("vol_floor"))


def drift_frame(inp: MonitorInputs, window: int, batch_size: int = 4096) -> tuple[pd.DataFrame, str, list[str]]:
    """(the monitor.csv frame, the alarm's signal, the BatchNorm layers' names) for every bar of inp.ds with
    a complete input window."""
    from cryptonorm.evaluate import drift
    from cryptonorm.learn import bn_monitor

    ds, idx, model = inp.ds, inp.ds.test_idx, inp.model
    if window < 2:
        raise ConfigError(f"--window {window}: the statistics need at least 2 windows; pass --window 2 or more")
    if window > len(idx):
        raise ConfigError(f"--window {window} is longer than the {len(idx)} bars of the data with a complete "
                          f"input window; pass --window {max(2, len(idx))} or less, or more data")
    if model is not None:
        fp = bn_monitor.forward_with_sums(model, ds.X, idx, ds.window, model.to_forecast, batch_size)
    else:
        assert inp.forecast is not None
        fp = bn_monitor.ForwardPass(outputs=inp.forecast(ds, idx), layers=[])
    if inp.cfg.target.kind == "volatility":  # the run's variance floor, as `predict` applies it
        from cryptonorm.features.realized import floor_forecasts

        fp.outputs = floor_forecasts(fp.outputs, inp.vol_floor, inp.cfg.target.vol_form)[0]
    cols: dict[str, np.ndarray] = {"timestamp": ds.timestamps[idx], "close": ds.close[idx], "forecast": fp.outputs}
    shifts, logvars = [], []
    for s in fp.layers:
        sh, lv = bn_monitor.layer_drift(s, window)
        cols[f"bn_shift:{s.name}"], cols[f"bn_logvar:{s.name}"] = sh, lv
        shifts.append(sh)
        logvars.append(lv)
    Xn, Xt, f = ds.X[idx], inp.train_rows, range(len(inp.features))  # Xn (n, F): the row each window ends at
    psis = np.column_stack([drift.rolling_psi(Xn[:, j], Xt[:, j], window) for j in f])  # (n, F)
    kss = np.column_stack([drift.rolling_ks(Xn[:, j], Xt[:, j], window) for j in f])  # (n, F)
    cols["psi_mean"], cols["psi_max"], cols["ks_max"] = psis.mean(1), psis.max(1), kss.max(1)
    if fp.layers:
        cols["bn_shift"], cols["bn_logvar"] = np.mean(shifts, axis=0), np.mean(logvars, axis=0)
        cols["alarm"], signal = cols["bn_shift"] + cols["bn_logvar"], "batchnorm"
    else:
        cols["alarm"], signal = cols["psi_mean"], "psi"
    for j, name in enumerate(inp.features):
        cols[f"psi:{name}"], cols[f"ks:{name}"] = psis[:, j], kss[:, j]
    return pd.DataFrame(cols), signal, [s.name for s in fp.layers]


def monitor(run_dir: Path, data_file: Path, window: int, out: Path | None = None,
            batch_size: int = 4096) -> MonitorResult:
    """Per-bar drift of `data_file` against the run in `run_dir`; writes monitor.csv and monitor.html into
    `out` (default RUN_DIR/monitor)."""
    from cryptonorm.render import html, html_monitor

    run_dir, data_file = Path(run_dir), Path(data_file)
    with RunDir(run_dir).lock():
        inp = load_inputs(run_dir, data_file)
        frame, signal, layers = drift_frame(inp, window, batch_size)
        notes = [] if layers else [f"the model has no BatchNorm layer (model.norm={inp.cfg.model.norm}): the "
                                   "alarm is the mean input PSI"]
        if inp.cfg.split.walk_forward.enabled:
            notes.append("a walk-forward run: the input PSI/KS compare with the rows of the run's single split, "
                         "not with the training rows of the fold its model.pt comes from")
        out = Path(out) if out is not None else run_dir / MONITOR_DIR
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / MONITOR_CSV, frame)
        result = MonitorResult(frame=frame, signal=signal, layers=layers, features=inp.features, window=window,
                               csv=out / MONITOR_CSV, html=None, notes=notes)
        if html.have_plotly():
            result.html = html_monitor.write_monitor_page(out / MONITOR_HTML, frame, signal, layers, inp.features,
                                                          window, f"{run_dir.name} on {data_file.name}")
        else:
            notes.append(f"no {MONITOR_HTML}: {html.INSTALL_HINT}")
    return result
