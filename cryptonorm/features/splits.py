"""Chronological splits with an embargo, walk-forward folds, and a saved scaler applied to other candles.

The rules are in `cryptonorm.features.dataset`'s docstring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cryptonorm.config import Config
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.features.dataset import Dataset, Prepared
from cryptonorm.features.scaling import Scaler, input_clip
from cryptonorm.timeframes import format_ms, parse_date

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
    scaler = Scaler(kind=cfg.features.scaler, clip=input_clip(cfg.model.input_norm)).fit(
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
    check_target_varies(prep, purged[0])
    return _build(prep, cfg, purged, embargo)


def check_target_varies(prep: Prepared, train_idx: np.ndarray, samples: str = "training samples") -> None:
    """Refuse a target that takes one value on every training sample (constant-price candles give a return
    target of exactly 0): a model fitted to it learns nothing, and its forecasts are the noise of its init.
    `samples` names the rows in the message."""
    y = prep.y[train_idx]
    if len(y) and float(np.nanmax(y)) == float(np.nanmin(y)):
        raise DataError(f"the {prep.kind} target is {float(y[0]):g} on all {len(y):,} {samples} (zero "
                        "variance: do the candles' prices move?); check the data, or move the split to where "
                        "the market trades")


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
    check_target_varies(prep, parts[0])
    return _build(prep, cfg, _purge(parts, embargo_bars(prep, cfg)), embargo_bars(prep, cfg))


def apply(prep: Prepared, scaler: Scaler, feature_names: list[str]) -> Dataset:
    """Scale new data with a saved scaler (no fitting). Every row whose input window is complete and clean
    goes to test_idx, the latest bars included although their labels lie in the future."""
    if list(feature_names) != list(prep.feature_names) and sorted(feature_names) == sorted(prep.feature_names):
        order = [prep.feature_names.index(n) for n in feature_names]  # the same features in another order
        prep = replace(prep, features=np.asfortranarray(prep.features[:, order]), feature_names=list(feature_names))
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
