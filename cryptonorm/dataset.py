"""Samples for the forecasters: labels, validity, time-ordered splits with an embargo, train-only scaling,
windows gathered by index, and the look-ahead audit.

A sample is identified by the row t where its input window ENDS: inputs are rows t-window+1 .. t, the
label uses bars t+1 .. t+horizon only. Nothing here copies windows: `Dataset.X` is the (N, F) matrix and
`gather_windows` builds a (B, W, F) batch from end rows on demand.

Labels (`target.kind`), with r1[i] = log(close[i] / close[i-1]):
    return      log(close[t+h] / close[t])                        (regression)
    direction   1.0 if that return > 0 else 0.0                   (classification)
    volatility  sqrt(mean(r1[t+1 .. t+h] ** 2)), realized, not annualized
`outcome` is always log(close[t+h] / close[t]) (the backtest trades it).

Validity of row t (reasons counted in `dropped`, first match wins):
    warmup      the window reaches into the indicators' warm-up (or before the first bar)
    no_label    t + horizon is past the last bar
    gap         gap_policy=drop: a gap (missing bars, `candles.gap_flags`) lies inside the window or the
                label span, i.e. between rows t-window+1 and t+horizon; gap_policy=ffill: one of the bars
                t .. t+horizon is a filled bar (the decision bar and the label must be real bars; only the
                window may hold filled bars, flagged by the `gap_mask` input)
    nan         any other non-finite input in the window, or a non-finite label
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
(`Scaler.clip`, stored with the scaler). `gap_mask` is left unscaled. Rows that are not in any valid
window may hold warm-up NaNs in `Prepared.features`; in `Dataset.X` they are 0 so the tensor is finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from cryptonorm import indicators
from cryptonorm.candles import format_ms, gap_flags, parse_date, timeframe_ms
from cryptonorm.config import Config
from cryptonorm.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

CLIP = 10.0  # scaled inputs are clipped to [-CLIP, CLIP]
_CHUNK = 1 << 16  # rows per chunk when scaling: bounds the float64 temporaries
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


# ---------------------------------------------------------------- scaler


@dataclass(eq=False)
class Scaler:
    """Per-column affine scaling fitted on training rows only; JSON-safe via to_dict/from_dict.

    standard: (x - mean) / std; robust: (x - median) / IQR; minmax: (x - min) / (max - min); none:
    identity. A column with zero spread gets scale 1. Results are clipped to [-clip, clip] (not for none).
    """

    kind: str = "standard"
    center: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (F,) float64
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))  # (F,) float64, > 0
    clip: float | None = CLIP
    names: list[str] | None = None  # feature names, for checking a saved scaler against new data
    n_rows: int = 0  # rows it was fitted on

    def fit(self, X: np.ndarray, rows: np.ndarray | None = None, keep: Sequence[int] = (),
            names: list[str] | None = None) -> Scaler:
        """Fit on X[rows] (all rows when None); columns in `keep` stay unscaled. Returns self."""
        if self.kind not in ("standard", "robust", "minmax", "none"):
            raise ConfigError(f"features.scaler {self.kind!r} is unknown; use standard, robust, minmax or none")
        X = np.asarray(X)
        n_feat = X.shape[1]
        center, scale = np.zeros(n_feat), np.ones(n_feat)
        n_rows = X.shape[0] if rows is None else int(np.count_nonzero(rows) if rows.dtype == bool else len(rows))
        if self.kind != "none":
            for j in range(n_feat):
                if j in keep:
                    continue
                col = X[:, j] if rows is None else X[:, j][rows]  # one column at a time: bounded memory
                col = col[np.isfinite(col)].astype("float64", copy=False)
                if len(col) == 0:
                    continue
                if self.kind == "standard":
                    c, s = float(col.mean()), float(col.std())
                elif self.kind == "robust":
                    q25, c, q75 = (float(q) for q in np.quantile(col, [0.25, 0.5, 0.75]))
                    s = q75 - q25 if q75 > q25 else float(col.std())
                else:
                    c, s = float(col.min()), float(col.max() - col.min())
                center[j] = c
                # zero (or rounding-noise) spread: leave the column centred but unscaled
                scale[j] = s if s > 1e-12 * max(abs(c), 1e-300) and math.isfinite(s) else 1.0
        self.center, self.scale, self.names, self.n_rows = center, scale, names, n_rows
        if self.kind == "none":
            self.clip = None
        return self

    def transform(self, X: np.ndarray, fill_nan: float | None = None) -> np.ndarray:
        """(n, F) -> (n, F) float32 scaled (and clipped), in row chunks; NaN -> fill_nan if given."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.center):
            raise DataError(f"the scaler was fitted on {len(self.center)} feature(s) but got an array of shape "
                            f"{X.shape}; use the features the model was trained with")
        out = np.empty(X.shape, dtype=np.float32)
        for a in range(0, len(X), _CHUNK):
            z = (X[a:a + _CHUNK] - self.center) / self.scale  # (chunk, F) float64
            if self.clip is not None:
                np.clip(z, -self.clip, self.clip, out=z)
            if fill_nan is not None:
                z[np.isnan(z)] = fill_nan
            out[a:a + _CHUNK] = z
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (plain floats and lists)."""
        return {"kind": self.kind, "center": [float(v) for v in self.center],
                "scale": [float(v) for v in self.scale], "clip": self.clip,
                "names": list(self.names) if self.names is not None else None, "n_rows": int(self.n_rows)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of to_dict."""
        try:
            center = np.asarray(d["center"], dtype="float64")
            scale = np.asarray(d["scale"], dtype="float64")
            kind = str(d["kind"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"saved scaler is malformed ({e}); retrain the model") from None
        if center.shape != scale.shape or center.ndim != 1 or not (scale > 0).all():
            raise DataError("saved scaler is malformed (center/scale shapes or a non-positive scale); retrain")
        clip = d.get("clip", CLIP)
        names = d.get("names")
        return cls(kind=kind, center=center, scale=scale, clip=None if clip is None else float(clip),
                   names=None if names is None else [str(n) for n in names], n_rows=int(d.get("n_rows", 0)))


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
    if kind == "volatility":
        r1 = indicators.log_return(close, 1)  # r1[i] = log(close[i] / close[i-1]), NaN at 0
        # sum of squares over rows j-h+1 .. j (pandas' compensated rolling sum: precise and prefix-stable)
        ss = pd.Series(r1 * r1).rolling(h, min_periods=h).sum().to_numpy()
        y = np.full(n, np.nan)
        if n > h:
            y[:n - h] = np.sqrt(np.maximum(ss[h:], 0.0) / h)
        return y, outcome
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


def prepare(candles: pd.DataFrame, cfg: Config) -> Prepared:
    """Features (raw), labels and validity of every row; raises DataError when no sample is possible."""
    prep = _prepare(candles, cfg)
    if not prep.valid.any():
        d = prep.dropped
        hint = ""
        if d["gap"] > 0.5 * len(prep.valid):
            hint = f"; most rows touch a gap: does data.timeframe ({cfg.data.timeframe}) match the candles?"
        raise DataError(f"no valid sample in {len(prep.valid)} bars (dropped: {d}); use more data or lower "
                        f"features.window ({prep.window}) / target.horizon ({prep.horizon}){hint}")
    return prep


def _prepare(candles: pd.DataFrame, cfg: Config) -> Prepared:
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
    if f.gap_policy == "ffill":
        names = names + ["gap_mask"]
    # (N, F) column-major: each feature is one contiguous column (fast to fill, fit and compare)
    feats = np.empty((n, len(names)), dtype="float64", order="F")
    for j, name in enumerate(names):
        feats[:, j] = filled if name == "gap_mask" else table[name].to_numpy(dtype="float64")
    close = table["close"].to_numpy(dtype="float64").copy()
    del table
    y, outcome = _labels(close, h, cfg.target.kind)

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
    dropped = {k: int(v.sum()) for k, v in reasons.items()}
    return Prepared(timestamps=ts, close=close, features=feats, feature_names=names, y=y, outcome=outcome,
                    valid=valid, window=w, horizon=h, dropped=dropped, kind=cfg.target.kind, filled=filled,
                    inputs_valid=inputs_valid)


# ---------------------------------------------------------------- splits


def embargo_bars(prep: Prepared, cfg: Config) -> int:
    """split.embargo, or horizon + window when unset."""
    return cfg.split.embargo if cfg.split.embargo is not None else prep.horizon + prep.window


def _purge(parts: list[np.ndarray], embargo: int) -> list[np.ndarray]:
    """Drop the last samples of each split that sit within `embargo` bars of the next non-empty split."""
    out = list(parts)
    nxt: int | None = None
    for i in range(len(out) - 1, -1, -1):
        if nxt is not None:
            out[i] = out[i][out[i] < nxt - embargo]  # keeps b - a - 1 >= embargo
        if len(out[i]):
            nxt = int(out[i][0])
    return out


def _covered_rows(idx: np.ndarray, window: int, n: int) -> np.ndarray:
    """(N,) bool: rows inside at least one window ending at idx (difference array, O(N))."""
    d = np.bincount(idx - window + 1, minlength=n + 1) - np.bincount(idx + 1, minlength=n + 1)
    return np.cumsum(d[:n]) > 0


def _build(prep: Prepared, cfg: Config, parts: list[np.ndarray], embargo: int) -> Dataset:
    tr, va, te = parts
    keep = [j for j, name in enumerate(prep.feature_names) if name == "gap_mask"]
    scaler = Scaler(kind=cfg.features.scaler).fit(
        prep.features, rows=_covered_rows(tr, prep.window, len(prep.close)), keep=keep,
        names=list(prep.feature_names))
    return Dataset(X=np.ascontiguousarray(scaler.transform(prep.features, fill_nan=0.0)),
                   y=prep.y.astype(np.float32), outcome=prep.outcome, timestamps=prep.timestamps,
                   close=prep.close, feature_names=list(prep.feature_names), window=prep.window,
                   train_idx=tr.astype(np.int64), val_idx=va.astype(np.int64), test_idx=te.astype(np.int64),
                   scaler=scaler, dropped=dict(prep.dropped), valid_rows=prep.valid, horizon=prep.horizon,
                   kind=prep.kind, embargo=embargo)


def _empty_error(name: str, parts_before: list[np.ndarray], n_valid: int, embargo: int, by_dates: bool,
                 prep: Prepared) -> DataError:
    sizes = ", ".join(f"{k} {len(p)}" for k, p in zip(("train", "val", "test"), parts_before, strict=True))
    if by_dates:
        ts = prep.timestamps[prep.valid]
        fix = (f"choose split.val_start/test_start between {format_ms(int(ts[0]))} and "
               f"{format_ms(int(ts[-1]))} with room for each split, or lower split.embargo")
    else:
        fix = (f"use more data, raise split.{name}, or lower split.embargo / features.window / "
               "target.horizon")
    return DataError(f"the {name} split has no samples ({n_valid} valid samples: {sizes} before the "
                     f"embargo of {embargo} bars between splits); {fix}")


def split(prep: Prepared, cfg: Config) -> Dataset:
    """Chronological train / validation / test split with an embargo, and a train-only scaler."""
    v = np.flatnonzero(prep.valid)
    s = cfg.split
    embargo = embargo_bars(prep, cfg)
    by_dates = s.val_start is not None and s.test_start is not None
    if by_dates:
        assert s.val_start is not None and s.test_start is not None
        vs, tst = parse_date(s.val_start), parse_date(s.test_start)
        if vs >= tst:
            raise ConfigError(f"split.val_start ({s.val_start}) must be before split.test_start ({s.test_start})")
        tv = prep.timestamps[v]
        parts = [v[tv < vs], v[(tv >= vs) & (tv < tst)], v[tv >= tst]]
    else:
        n = len(v)
        n_tr, n_va = int(round(s.train * n)), int(round(s.val * n))
        n_used = min(n, int(round((s.train + s.val + s.test) * n)))
        n_te = max(0, n_used - n_tr - n_va)
        start = n - (n_tr + n_va + n_te)  # leftover (fractions summing to < 1): the oldest samples
        parts = [v[start:start + n_tr], v[start + n_tr:start + n_tr + n_va], v[start + n_tr + n_va:]]
    purged = _purge(parts, embargo)
    for name, p in zip(("train", "val", "test"), purged, strict=True):
        if len(p) == 0:
            raise _empty_error(name, parts, len(v), embargo, by_dates, prep)
    return _build(prep, cfg, purged, embargo)


def fold(prep: Prepared, train: slice, val: slice, test: slice, cfg: Config) -> Dataset:
    """One walk-forward fold: the samples whose END rows lie in each row slice (positions), with the same
    embargo (last samples of train and val dropped) and a scaler fitted on this fold's training rows.

    Any part may come back empty (e.g. a slice full of gaps); the caller decides whether to skip the fold.
    With an empty train part the scaler is the identity.
    """
    n = len(prep.close)
    rngs = [sl.indices(n) for sl in (train, val, test)]
    if any(st != 1 for _, _, st in rngs):
        raise ValueError("fold slices must have step 1")
    (a0, b0, _), (a1, b1, _), (a2, b2, _) = rngs
    if b0 > a1 or (a2 < b2 and b1 > a2):
        raise ValueError(f"fold slices must be ordered and disjoint: train {train}, val {val}, test {test}")
    v = np.flatnonzero(prep.valid)
    parts = [v[(v >= a) & (v < b)] for a, b, _ in rngs]
    return _build(prep, cfg, _purge(parts, embargo_bars(prep, cfg)), embargo_bars(prep, cfg))


def apply(prep: Prepared, scaler: Scaler, feature_names: list[str]) -> Dataset:
    """Scale new data with a saved scaler (no fitting). Every row whose input window is complete and clean
    goes to test_idx, the latest bars included although their labels lie in the future."""
    if list(feature_names) != list(prep.feature_names):
        extra = sorted(set(prep.feature_names) - set(feature_names))
        lost = sorted(set(feature_names) - set(prep.feature_names))
        raise DataError(f"the model was trained on other features (missing now: {lost or '-'}, new: "
                        f"{extra or '-'}); use the run's own config.features")
    empty = np.zeros(0, dtype=np.int64)
    return Dataset(X=np.ascontiguousarray(scaler.transform(prep.features, fill_nan=0.0)),
                   y=prep.y.astype(np.float32), outcome=prep.outcome, timestamps=prep.timestamps,
                   close=prep.close, feature_names=list(prep.feature_names), window=prep.window,
                   train_idx=empty, val_idx=empty.copy(),
                   test_idx=np.flatnonzero(prep.inputs_valid).astype(np.int64),
                   scaler=scaler, dropped=dict(prep.dropped), valid_rows=prep.inputs_valid, horizon=prep.horizon,
                   kind=prep.kind)


# ---------------------------------------------------------------- windows


@overload
def gather_windows(X: torch.Tensor, idx: torch.Tensor, window: int) -> torch.Tensor: ...
@overload
def gather_windows(X: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray: ...


def gather_windows(X: Any, idx: Any, window: int) -> Any:
    """(N, F) and end rows (B,) -> (B, window, F): X[idx[:, None] + arange(-window+1, 1)].

    Only the batch is materialized, never all windows. Works on torch tensors and numpy arrays.
    """
    if isinstance(X, np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (int(idx.min()) < window - 1 or int(idx.max()) >= len(X)):
            raise IndexError(f"end rows must lie in [{window - 1}, {len(X) - 1}]")
        return X[idx[:, None] + np.arange(-window + 1, 1)]
    import torch

    if idx.numel() and (int(idx.min()) < window - 1 or int(idx.max()) >= X.shape[0]):
        raise IndexError(f"end rows must lie in [{window - 1}, {X.shape[0] - 1}]")
    offs = torch.arange(-window + 1, 1, device=idx.device, dtype=idx.dtype)  # (W,)
    return X[idx[:, None] + offs]  # (B, W, F)


# ---------------------------------------------------------------- look-ahead audit


@dataclass(frozen=True)
class Leak:
    """A column whose past values change when the future is cut off."""

    name: str  # feature name, "scaled:<feature>", "label", "outcome" or "valid"
    first: int  # ms: the earliest bar whose value changed
    cut: int  # ms: the last bar kept in the truncated data that revealed it
    max_abs_diff: float  # largest change seen (inf when a NaN appeared or vanished)


@dataclass
class AuditReport:
    """Result of `audit`: `leaks` is empty when nothing peeks."""

    leaks: list[Leak]
    cuts: list[int]  # ms of the last bar kept, per cut point
    checked: str  # what was compared, in words

    @property
    def ok(self) -> bool:
        return not self.leaks

    @property
    def names(self) -> list[str]:
        return [leak.name for leak in self.leaks]

    def lines(self) -> list[str]:
        if self.ok:
            return [f"no look-ahead: {self.checked}"]
        return [f"{leak.name}: changes at {format_ms(leak.first)} when the data ends at {format_ms(leak.cut)} "
                f"(max abs diff {leak.max_abs_diff:.3g})" for leak in self.leaks]


def _diff_rows(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, float]:
    """Rows where a and b differ (NaN equals NaN) and the largest difference."""
    with np.errstate(invalid="ignore"):
        same = (np.abs(a - b) <= atol + rtol * np.abs(b)) | (np.isnan(a) & np.isnan(b))
    bad = np.flatnonzero(~same)
    if not len(bad):
        return bad, 0.0
    d = np.abs(a[bad] - b[bad])
    return bad, float(np.nanmax(d)) if np.isfinite(d).any() else math.inf


def audit(candles: pd.DataFrame, cfg: Config, n_points: int = 5, *, points: Sequence[int] | None = None,
          rtol: float = 1e-9, atol: float = 1e-12) -> AuditReport:
    """Look-ahead audit: cut the data after several bars t, recompute everything, compare with the
    full-data values at rows <= t.

    Compared: every raw feature, the scaled inputs (the scaler fitted on the full data's training split,
    applied to the truncated data), and at rows whose label span ends <= t, the label, the outcome and
    the validity. `points` are row positions in `candles` (the last row kept); by default `n_points`
    evenly spaced between the first valid sample and the end.
    """
    full = prepare(candles, cfg)
    ds = split(full, cfg)
    ts_c = candles["timestamp"].to_numpy(dtype="int64")
    h = full.horizon
    if points is None:
        first_valid_ts = int(full.timestamps[np.argmax(full.valid)])
        # late enough that the truncated data still has samples whose label span ends inside it
        lo = max(int(np.searchsorted(ts_c, first_valid_ts)) + h + 1, min_bars(cfg) - 1)
        hi = len(candles) - 2
        if hi < lo:
            raise DataError(f"too few bars ({len(candles)}) to audit; use more data")
        cuts = sorted({int(round(x)) for x in np.linspace(lo, hi, max(1, n_points))})
    else:
        cuts = sorted({int(p) for p in points})
        bad = [p for p in cuts if not 0 <= p < len(candles)]
        if bad:
            raise DataError(f"audit points {bad} are not rows of the data (0 .. {len(candles) - 1})")
    found: dict[str, Leak] = {}

    def note(name: str, rows: np.ndarray, diff: float, cut_ts: int) -> None:
        if not len(rows):
            return
        first = int(full.timestamps[rows[0]])
        old = found.get(name)
        if old is None or first < old.first:
            found[name] = Leak(name, first, cut_ts, max(diff, old.max_abs_diff if old else 0.0))
        elif diff > old.max_abs_diff:
            found[name] = Leak(old.name, old.first, old.cut, diff)

    for c in cuts:
        cut_ts = int(ts_c[c])
        part = _prepare(candles.iloc[:c + 1], cfg)
        m = len(part.timestamps)
        if not np.array_equal(part.timestamps, full.timestamps[:m]):
            raise AssertionError("truncated rows do not align with the full data")  # a bug, not user error
        raw_bad = set()
        for j, name in enumerate(full.feature_names):
            rows, d = _diff_rows(part.features[:, j], full.features[:m, j], rtol, atol)
            note(name, rows, d, cut_ts)
            if len(rows):
                raw_bad.add(name)
        xs = ds.scaler.transform(part.features, fill_nan=0.0)
        for j, name in enumerate(full.feature_names):
            if name not in raw_bad:
                rows, d = _diff_rows(xs[:, j].astype("float64"), ds.X[:m, j].astype("float64"), rtol, atol)
                note(f"scaled:{name}", rows, d, cut_ts)
        k = max(0, m - h)  # rows r with r + h <= m - 1: their label span ends inside the kept data
        for name, a, b in (("label", part.y[:k], full.y[:k]), ("outcome", part.outcome[:k], full.outcome[:k]),
                           ("valid", part.valid[:k].astype("float64"), full.valid[:k].astype("float64"))):
            rows, d = _diff_rows(a, b, rtol, atol)
            note(name, rows, d, cut_ts)
    leaks = sorted(found.values(), key=lambda leak: (leak.first, leak.name))
    checked = (f"{len(cuts)} cut points, {len(full.feature_names)} features raw and scaled, label, outcome "
               "and validity")
    return AuditReport(leaks=leaks, cuts=[int(ts_c[c]) for c in cuts], checked=checked)
