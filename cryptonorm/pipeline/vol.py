"""The volatility steps of a run: metrics beside the baselines and Diebold-Mariano, and the vol_target backtest.

For `target.kind: volatility` training writes, per split (val, test), into metrics.json:
    <split>.{mse, mae, ic_pearson, ic_spearman}       on the form the network predicts (target.vol_form)
    <split>.{qlike, mse_var, mse_vol, mz_intercept, mz_slope, mz_r2, rank_ic, directional_accuracy}
                                                       on the variance (evaluate/vol_metrics.py; direction
                                                       around the TRAINING labels' mean variance)
    <split>.baselines.<har|har_levels|ewma|ewma_fit|garch|naive>
                                                       the same variance metrics for each baseline, on
                                                       exactly the model's bars, plus dm_vs_har
    <split>.dm_vs_har.{qlike, mse_var}                 Diebold-Mariano of the model against HAR (on logs)
    <split>.dm_vs_best_baseline.{qlike, mse_var}       ... and against the best baseline:
    best_baseline.{name, chosen_on, qlike}             the baseline with the lowest QLIKE on the model's
                                                       validation bars (under walk-forward, which has no
                                                       validation split: on the baselines' fitting rows)
    <split>.vol_floor_hits                             forecasts raised to the variance floor
    vol_floor.{variance, quantile, hits}               the floor (features/realized.variance_floor: a
                                                       quantile of the training labels' variance), per split
and into forecasts.csv the columns forecast_var, y_var and baseline_<name> (variances per bar). Every
forecast (forecast, forecast_var, the metrics, the backtest) is the floored one.
Baselines are fitted on the training rows (evaluate/vol_baselines.py); under walk-forward, on the valid
rows before the first test fold's embargo.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cryptonorm.config import Config
from cryptonorm.evaluate import vol_baselines, vol_metrics
from cryptonorm.features import realized
from cryptonorm.features.splits import embargo_bars


class VolContext:
    """Per-run volatility data: label and forecast variances, baseline forecasts (N,) each."""

    def __init__(self, prep: Any, forecasts: np.ndarray, split_of: np.ndarray, cfg: Config) -> None:
        form = cfg.target.vol_form
        self.y_var = realized.from_form(prep.y, form)  # (N,) label variance, NaN where undefined
        self.horizon = cfg.target.horizon
        train = np.flatnonzero(split_of == "train")
        if len(train) == 0:  # walk-forward: everything valid before the first fold's embargo
            first = int(np.flatnonzero(split_of == "test")[0])
            embargo = embargo_bars(prep, cfg)
            train = np.flatnonzero(prep.valid[: max(first - embargo, 0)])
        self.train_rows = train
        # no forecast below the variance floor of the training labels (features/realized.py, issue 23)
        self.floor = realized.variance_floor(self.y_var[train])
        self.forecasts, self.floor_hit = realized.floor_forecasts(forecasts, self.floor, form)  # (N,) each
        self.f_var = realized.from_form(self.forecasts, form)  # (N,) forecast variance, NaN where none
        ts = prep.timestamps
        span = None
        if cfg.features.gap_policy != "ffill":
            from cryptonorm.timeframes import timeframe_ms

            span = np.r_[1, np.diff(ts) // timeframe_ms(cfg.data.timeframe)]
        r = realized.bar_returns(prep.close, span)
        self.baselines = vol_baselines.fit_baselines(prep.bar_var, self.y_var, r, train, self.horizon,
                                                     cfg.data.timeframe, cfg.target.rv)
        ytr = self.y_var[train]
        self.centre = float(np.nanmean(ytr)) if np.isfinite(ytr).any() else None
        val = np.flatnonzero((split_of == "val") & np.isfinite(self.f_var))
        self.chosen_on = "val" if len(val) else "train"
        self.best = vol_baselines.strongest(self.baselines.forecasts, self.y_var, val if len(val) else train)

    def best_info(self) -> dict[str, Any]:
        """metrics.json's best_baseline: its name, the rows it was chosen on, its QLIKE there."""
        if self.best is None:
            return {"name": None, "chosen_on": self.chosen_on, "qlike": None}
        return {"name": self.best[0], "chosen_on": self.chosen_on, "qlike": self.best[1]}

    def metrics(self, idx: np.ndarray) -> dict[str, Any]:
        """Variance metrics of the model, each baseline and the DM tests on the rows `idx`."""
        f, v = self.f_var[idx], self.y_var[idx]
        out: dict[str, Any] = dict(vol_metrics.vol_metrics(f, v, self.centre))
        del out["n"]
        out["vol_floor_hits"] = int(self.floor_hit[idx].sum())  # forecasts raised to the floor
        har = self.baselines.forecasts["har"][idx]
        out["dm_vs_har"] = vol_metrics.dm_vs(f, har, v, self.horizon)
        if self.best is not None:
            best = self.baselines.forecasts[self.best[0]][idx]
            if np.isfinite(best).all() and (best > 0).all():
                out["dm_vs_best_baseline"] = vol_metrics.dm_vs(f, best, v, self.horizon)
        base: dict[str, Any] = {}
        for name, fc in self.baselines.forecasts.items():
            b = fc[idx]
            if not (np.isfinite(b).all() and (b > 0).all()):
                base[name] = {"skipped": f"{int(np.sum(~(np.isfinite(b) & (b > 0))))} of {len(b)} bars have no "
                                         "positive forecast (too little history)"}
                continue
            m: dict[str, Any] = dict(vol_metrics.vol_metrics(b, v, self.centre))
            del m["n"]
            if name != "har":
                m["dm_vs_har"] = vol_metrics.dm_vs(b, har, v, self.horizon)
            base[name] = m
        for name, note in self.baselines.info.items():
            if "skipped" in note:
                base.setdefault(name, {"skipped": note["skipped"]})
        out["baselines"] = base
        return out

    def floor_summary(self, split_of: np.ndarray) -> dict[str, Any]:
        """metrics.json's vol_floor: the floor's variance, its rule and the forecasts it raised per split."""
        hits = {name: int(self.floor_hit[split_of == name].sum()) for name in ("train", "val", "test")}
        return {"variance": self.floor, "quantile": realized.VOL_FLOOR_QUANTILE, "hits": hits}

    def floor_note(self, split_of: np.ndarray) -> str | None:
        """One line for the run summary when the floor raised an out-of-sample forecast, else None."""
        n = int(self.floor_hit[(split_of == "val") | (split_of == "test")].sum())
        if n == 0 or self.floor is None:
            return None
        return (f"{n} validation/test variance forecast(s) fell below the floor {self.floor:.3g} (the "
                f"{realized.VOL_FLOOR_QUANTILE:g} quantile of the training labels' variance) and were raised to it")

    def columns(self, start: int) -> dict[str, np.ndarray]:
        """forecasts.csv columns from row `start` on: forecast_var, y_var, baseline_<name>."""
        cols = {"forecast_var": self.f_var[start:], "y_var": self.y_var[start:]}
        for name, fc in self.baselines.forecasts.items():
            cols[f"baseline_{name}"] = fc[start:]
        return cols


def backtest_frame(df: pd.DataFrame, cfg: Config, split: str,
                   funding: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
    """The vol_target backtest of one split of forecasts.csv (all its rows feed the trailing-vol baseline),
    and the realized annualized vol of each bar's label (what the forecast vol is compared with).
    `funding` (one value per bar of the split): a swap's funding per unit of position, charged."""
    from cryptonorm.timeframes import bars_per_year
    from cryptonorm.trade import positions
    from cryptonorm.trade.vol_target import simulate_vol_target

    ts = df["timestamp"].to_numpy("int64")
    close = df["close"].to_numpy("float64")
    trailing = positions.realized_vol(ts, close, cfg.backtest.vol_lookback, cfg.data.timeframe)
    rows = (df["split"] == split).to_numpy()
    fvar = (df["forecast_var"] if "forecast_var" in df else
            pd.Series(realized.from_form(df["forecast"].to_numpy("float64"), cfg.target.vol_form)))
    result = simulate_vol_target(ts[rows], close[rows], np.asarray(fvar, dtype="float64")[rows], cfg.backtest,
                                 cfg.data.timeframe, trailing_vol=trailing[rows], funding=funding)
    yvar = (df["y_var"] if "y_var" in df else
            pd.Series(realized.from_form(df["y"].to_numpy("float64"), cfg.target.vol_form)))
    realized_vol = np.sqrt(np.asarray(yvar, dtype="float64")[rows] * bars_per_year(cfg.data.timeframe))
    return result, realized_vol
