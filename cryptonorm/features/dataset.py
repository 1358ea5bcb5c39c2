"""Samples for the forecasters: labels, validity, time-ordered splits with an embargo, train-only scaling,
(`splits.py`, `scaling.py`) and the look-ahead audit (`audit.py`).

A sample is identified by the row t where its input window ENDS: inputs are rows t-window+1 .. t, the
label uses bars t+1 .. t+horizon only. Nothing here copies windows: `Dataset.X` is the (N, F) matrix and
`cryptonorm.learn.loop.gather_windows` builds a (B, W, F) batch from end rows on demand.

Labels (`target.kind`), with r1[i] = log(close[i] / close[i-1]):
    return      log(close[t+h] / close[t])                        (regression)
    direction   1.0 if that return > 0 else 0.0                   (classification)
    volatility  target.vol_form (vol | log_var | var) of the mean per-bar realized variance over bars
                t+1 .. t+h, by target.rv (close | parkinson | garman_klass; see realized.py); with the
                defaults (vol, close): sqrt(mean(r1[t+1 .. t+h] ** 2)), not annualized
`outcome` is always log(close[t+h] / close[t]) (the backtest trades it).

Validity of row t (reasons counted in `dropped`, first match wins):
    warmup      the window reaches into the indicators' warm-up (or before the first bar)
    no_label    t + horizon is past the last bar
    gap         gap_policy=drop: a gap (missing bars, `candles.gap_flags`) lies inside the window or the
                label span, i.e. between rows t-window+1 and t+horizon; gap_policy=ffill: one of the bars
                t .. t+horizon is a filled bar (the decision bar and the label must be real bars; only the
                window may hold filled bars, flagged by the `gap_mask` input)
    nan         any other non-finite input in the window, or a non-finite label (for volatility also a
                label of exactly zero variance: a flat price over the whole horizon)
A gap is never one ordinary bar inside a sample's window or label span. Indicators, however, are computed
over the bar sequence (see indicators.py): a look-back that reaches before the window may still span a gap
(e.g. logret_1 or sma_50 at the first row of a window that starts right after a gap).

Splits are chronological, never shuffled: by fractions of the valid samples (split.train/val/test; when
they sum to less than 1, the OLDEST samples are left out, so the test split is always the most recent) or
by dates (split.val_start, split.test_start). Between consecutive splits an embargo of E bars
(split.embargo; default target.horizon + features.window) is enforced by dropping the LAST samples of the
earlier split, so that the next split starts exactly where it was asked to: for the last end row a of one
split and the first end row b of the next, b - a - 1 >= E. With E >= horizon + window - 1 no label of the
earlier split overlaps an input window of the later one.

Scaling (features.scaler) is fitted on the rows covered by training windows only and applied to every
row; after scaling, values are clipped to +-10 (scale units) so one crash bar cannot dominate a batch
(`Scaler.clip`, stored with the scaler; not in front of an input norm: `scaling.input_clip`). `gap_mask`
is left unscaled. Rows that are not in any valid window may hold warm-up NaNs in `Prepared.features`; in
`Dataset.X` they are 0 so the tensor is finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryptonorm.config import Config
from cryptonorm.data.candles import gap_flags
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.features import indicators, realized
from cryptonorm.features.funding import funding_features
from cryptonorm.timeframes import format_ms, timeframe_ms

if TYPE_CHECKING:
    from cryptonorm.features.scaling import Scaler

REASONS = ("warmup", "no_label", "gap", "nan")


# ---------------------------------------------------------------- containers


@dataclass(eq=False)
class Prepared:
    """Raw features, labels and validity of every row; no scaling yet."""

    timestamps: np.ndarray  # (N,) int64 ms, bar open time (the full grid with gap_policy=ffill)
    close: np.ndarray  # (N,) float64
    features: np.ndarray  # (N, F) float64 raw (unscaled) model inputs, NaN in warm-up; column-major
    feature_names: list[str]  # (F,)
    y: np.ndarray  # (N,) float64 label of the sample whose window ends at row t; NaN if undefined
    outcome: np.ndarray  # (N,) float64 log(close[t+h] / close[t]); NaN if undefined
    valid: np.ndarray  # (N,) bool: row t can be a sample
    window: int
    horizon: int
    dropped: dict[str, int]  # rows that cannot be samples, by reason (see REASONS)
    kind: str = "return"  # target.kind
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,) bool: ffilled bars
    inputs_valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,) bool: row t's
    # window is complete and clean (as for `valid`) whether or not its label exists: what `predict` may use
    bar_var: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N,) float64 per-bar realized variance
    # (target.rv, realized.bar_variance) for kind volatility, read by the volatility baselines; else empty
    vol_form: str = "vol"  # target.vol_form: what `y` holds for kind volatility


@dataclass(eq=False)
class Dataset:
    """Scaled inputs plus the END rows of the train / validation / test samples."""

    X: np.ndarray  # (N, F) float32, scaled, C-contiguous; 0 where the raw value is NaN (warm-up)
    y: np.ndarray  # (N,) float32 label, NaN where undefined
    outcome: np.ndarray  # (N,) float64 log(close[t+h] / close[t])
    timestamps: np.ndarray  # (N,) int64 ms
    close: np.ndarray  # (N,) float64
    feature_names: list[str]
    window: int
    train_idx: np.ndarray  # (n_train,) int64 end rows, ascending
    val_idx: np.ndarray  # (n_val,) int64
    test_idx: np.ndarray  # (n_test,) int64
    scaler: Scaler
    dropped: dict[str, int]
    valid_rows: np.ndarray  # (N,) bool: every valid sample (Prepared.valid)
    horizon: int = 1
    kind: str = "return"
    embargo: int = 0  # bars enforced between consecutive splits


# ---------------------------------------------------------------- prepare


def _check_candles(candles: pd.DataFrame) -> np.ndarray:
    missing = [c for c in indicators.CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}; need "
                        f"{', '.join(indicators.CANDLE_COLUMNS)}")
    ts = candles["timestamp"].to_numpy(dtype="int64")
    if len(ts) == 0:
        raise DataError("no candles to build samples from; fetch data first or check data.since/until")
    if len(ts) > 1 and (np.diff(ts) <= 0).any():
        raise DataError("candle timestamps are not strictly increasing; clean them with candles.clean first")
    return ts


def fill_gaps(candles: pd.DataFrame, timeframe: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Reindex onto the full timeframe grid: a missing bar becomes a flat bar at the last close with
    volume 0. Returns the frame and a (N,) bool mask of the filled bars."""
    ts = _check_candles(candles)
    step = timeframe_ms(timeframe)
    off = (ts - ts[0]) % step != 0
    if off.any():
        raise DataError(f"{int(off.sum())} timestamp(s) are off the {timeframe} grid (first "
                        f"{format_ms(int(ts[np.argmax(off)]))}); check data.timeframe")
    pos = (ts - ts[0]) // step
    m = int(pos[-1]) + 1
    filled = np.ones(m, dtype=bool)
    filled[pos] = False
    if m == len(ts):
        return candles.reset_index(drop=True), filled
    src = np.full(m, -1, dtype=np.int64)
    src[pos] = np.arange(len(ts))
    src = np.maximum.accumulate(src)  # each bar -> the last real bar at or before it
    c = candles["close"].to_numpy(dtype="float64")[src]
    out: dict[str, np.ndarray] = {"timestamp": ts[0] + np.arange(m, dtype=np.int64) * step}
    for k in ("open", "high", "low"):
        out[k] = np.where(filled, c, candles[k].to_numpy(dtype="float64")[src])
    out["close"] = c
    out["volume"] = np.where(filled, 0.0, candles["volume"].to_numpy(dtype="float64")[src])
    return pd.DataFrame(out), filled


def _labels(close: np.ndarray, horizon: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, outcome), (N,) each; row t uses bars t+1 .. t+horizon only."""
    n, h = len(close), horizon
    outcome = np.full(n, np.nan)
    if n > h:
        outcome[:n - h] = np.log(close[h:] / close[:-h])
    if kind == "return":
        return outcome.copy(), outcome
    if kind == "direction":
        y = (outcome > 0).astype("float64")
        y[np.isnan(outcome)] = np.nan
        return y, outcome
    if kind == "volatility":  # its label reads the OHLC bars: realized.labels, called by prepare
        return np.full(n, np.nan), outcome
    raise ConfigError(f"target.kind {kind!r} is unknown; use return, direction or volatility")


def _window_count(bad: np.ndarray, lo_off: int, hi_off: int) -> np.ndarray:
    """For each t, how many rows r in [t+lo_off, t+hi_off] (clipped to the array) have bad[r]."""
    n = len(bad)
    cs = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    t = np.arange(n)
    lo = np.clip(t + lo_off, 0, n)
    hi = np.clip(t + hi_off + 1, 0, n)
    return np.where(hi > lo, cs[hi] - cs[np.minimum(lo, hi)], 0)


def min_bars(cfg: Config) -> int:
    """Bars needed for one sample: the model inputs' warm-up + features.window + target.horizon."""
    f = cfg.features
    names = indicators.input_columns(indicators.CANDLE_COLUMNS + indicators.feature_columns(f), f)
    return indicators.warmup_bars(f, names) + f.window + cfg.target.horizon


def prepare(candles: pd.DataFrame, cfg: Config, funding: pd.DataFrame | None = None) -> Prepared:
    """Features (raw), labels and validity of every row; raises DataError when no sample is possible."""
    prep = prepare_unchecked(candles, cfg, funding)
    if not prep.valid.any():
        d = prep.dropped
        hint = ""
        if d["gap"] > 0.5 * len(prep.valid):
            hint = f"; most rows touch a gap: does data.timeframe ({cfg.data.timeframe}) match the candles?"
        raise DataError(f"no valid sample in {len(prep.valid)} bars (dropped: {d}); use more data or lower "
                        f"features.window ({prep.window}) / target.horizon ({prep.horizon}){hint}")
    return prep


def prepare_unchecked(candles: pd.DataFrame, cfg: Config, funding: pd.DataFrame | None = None) -> Prepared:
    """`prepare` without the "no valid sample" check (the audit prepares short prefixes). `funding`: a
    swap's funding rates (timestamp, rate); adds the features of `features/funding.py`."""
    f, w, h = cfg.features, cfg.features.window, cfg.target.horizon
    _check_candles(candles)
    if f.gap_policy == "ffill":
        candles, filled = fill_gaps(candles, cfg.data.timeframe)
    else:
        filled = np.zeros(len(candles), dtype=bool)
    n = len(candles)
    names = indicators.input_columns(indicators.CANDLE_COLUMNS + indicators.feature_columns(f), f)
    if not names:
        raise ConfigError("no model inputs: features.inputs 'stationary' keeps only rsi, bb_pctb/bb_width, "
                          "logret, vol, volz and rel_* columns; configure some of them or set features.inputs: all")
    need = min_bars(cfg)
    if n < need:
        raise DataError(f"the data has {n} bars but one sample needs at least {need} (indicator warm-up "
                        f"{need - w - h} + features.window {w} + target.horizon {h}); use more data or lower "
                        "features.window, target.horizon or the indicator periods")
    ts = candles["timestamp"].to_numpy(dtype="int64")
    table = indicators.compute_features(candles, f)
    extra = {} if funding is None else funding_features(ts, timeframe_ms(cfg.data.timeframe), funding, f.funding)
    names = names + list(extra)
    if f.gap_policy == "ffill":
        names = names + ["gap_mask"]
    # (N, F) column-major: each feature is one contiguous column (fast to fill, fit and compare)
    feats = np.empty((n, len(names)), dtype="float64", order="F")
    for j, name in enumerate(names):
        if name in extra:
            feats[:, j] = extra[name]
        else:
            feats[:, j] = filled if name == "gap_mask" else table[name].to_numpy(dtype="float64")
    close = table["close"].to_numpy(dtype="float64").copy()
    del table
    y, outcome = _labels(close, h, cfg.target.kind)
    bar_var = np.zeros(0)
    if cfg.target.kind == "volatility":
        span = None if f.gap_policy == "ffill" else np.r_[1, np.diff(ts) // timeframe_ms(cfg.data.timeframe)]
        y, _, bar_var = realized.labels(candles, h, cfg.target.rv, cfg.target.vol_form, span)

    valid, inputs_valid, dropped = _validity(feats, y, ts, filled, cfg)
    return Prepared(timestamps=ts, close=close, features=feats, feature_names=names, y=y, outcome=outcome,
                    valid=valid, window=w, horizon=h, dropped=dropped, kind=cfg.target.kind, filled=filled,
                    inputs_valid=inputs_valid, bar_var=bar_var, vol_form=cfg.target.vol_form)


def _validity(feats: np.ndarray, y: np.ndarray, ts: np.ndarray, filled: np.ndarray,
              cfg: Config) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(valid (N,), inputs_valid (N,), drop counts by reason) of every row as a sample's end row (rules in
    the module docstring)."""
    f, w, h = cfg.features, cfg.features.window, cfg.target.horizon
    n = len(ts)
    row_ok = np.ones(n, dtype=bool)
    for j in range(feats.shape[1]):  # column by column: no (N, F) temporary
        row_ok &= np.isfinite(feats[:, j])
    ok_rows = np.flatnonzero(row_ok)
    first_ok = int(ok_rows[0]) if len(ok_rows) else n
    t = np.arange(n)
    warm = t - w + 1 < first_ok
    no_label = t + h >= n
    if f.gap_policy == "drop":
        # gap_flags[r]: a gap lies between rows r-1 and r; crossing it needs r in [t-w+2, t+h]
        flags = gap_flags(ts, cfg.data.timeframe)
        gap = _window_count(flags, -w + 2, h) > 0
        gap_in_window = _window_count(flags, -w + 2, 0) > 0
    else:
        gap = _window_count(filled, 0, h) > 0
        gap_in_window = filled.copy()
    nan_inputs = _window_count(np.logical_not(row_ok), -w + 1, 0) > 0
    nan = nan_inputs | ~np.isfinite(y)
    inputs_valid = ~(warm | gap_in_window | nan_inputs)
    reasons = {"warmup": warm, "no_label": no_label & ~warm, "gap": gap & ~warm & ~no_label}
    reasons["nan"] = nan & ~warm & ~no_label & ~gap
    valid = ~(warm | no_label | gap | nan)
    return valid, inputs_valid, {k: int(v.sum()) for k, v in reasons.items()}
