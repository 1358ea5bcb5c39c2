"""Labels, validity, gaps, splits with embargo, train-only scaling, windows and the look-ahead audit,
on real BTC/USDT 1h candles (28 real gaps in all, 14 in the first 20,000 bars)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptonorm.config import Config, build_config
from cryptonorm.data.candles import find_gaps
from cryptonorm.data.importers import read_user_file
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.features import dataset as ds_mod
from cryptonorm.features import indicators
from cryptonorm.features.audit import audit
from cryptonorm.features.dataset import prepare
from cryptonorm.features.scaling import Scaler
from cryptonorm.features.splits import apply, fold, split
from cryptonorm.learn.loop import gather_windows
from cryptonorm.timeframes import parse_date

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOUR = 3_600_000
# short indicator periods: small warm-up, fast tests
SMALL: dict[str, Any] = {"sma": [5], "ema": [5], "rsi": [5], "macd": [[3, 6, 2]], "bbands": [[5, 2.0]],
                         "atr": [5], "returns": [1, 2], "volatility": [4], "volume_z": [4]}


@lru_cache(maxsize=1)
def _btc_all() -> pd.DataFrame:
    path = DATA_DIR / "BTC_USDT-1h.csv.gz"
    if not path.exists():
        pytest.skip(f"real data {path} not present")
    return read_user_file(path, "1h")


def btc(n: int | None = None) -> pd.DataFrame:
    df = _btc_all()
    return (df if n is None else df.iloc[:n]).reset_index(drop=True).copy()


def cfg_of(features: dict[str, Any] | None = None, **sections: Any) -> Config:
    return build_config({"data": {"timeframe": "1h"}, "features": features or {}, **sections})


def naive_rows(idx: np.ndarray, lo: int, hi: int) -> set[int]:
    """Union of rows t+lo .. t+hi over t in idx, by brute force."""
    return {int(t) + k for t in idx for k in range(lo, hi + 1)}


# ---------------------------------------------------------------- labels and windows


@pytest.mark.parametrize("kind", ["return", "direction", "volatility"])
@pytest.mark.parametrize("h", [1, 5])
def test_labels_use_bars_t_plus_1_to_t_plus_h(kind: str, h: int) -> None:
    df = btc(600)
    prep = prepare(df, cfg_of(SMALL, target={"kind": kind, "horizon": h}))
    c = df["close"].to_numpy()
    for t in (100, 250, 599 - h):
        ret = np.log(c[t + h] / c[t])
        assert prep.outcome[t] == pytest.approx(ret, rel=1e-12)
        if kind == "return":
            assert prep.y[t] == pytest.approx(ret, rel=1e-12)
        elif kind == "direction":
            assert prep.y[t] == (1.0 if ret > 0 else 0.0)
        else:
            r1 = [np.log(c[t + k] / c[t + k - 1]) for k in range(1, h + 1)]
            assert prep.y[t] == pytest.approx(np.sqrt(np.mean(np.square(r1))), rel=1e-9)
    assert np.isnan(prep.y[-h:]).all() and np.isnan(prep.outcome[-h:]).all()
    assert not prep.valid[-h:].any()


def test_direction_of_a_zero_return_is_zero() -> None:
    df = btc(300)
    df.loc[200, "close"] = df.loc[195, "close"]
    df.loc[200, ["high", "low", "open"]] = [df.loc[195, "close"] * 1.001, df.loc[195, "close"] * 0.999,
                                            df.loc[195, "close"]]
    prep = prepare(df, cfg_of(SMALL, target={"kind": "direction", "horizon": 5}))
    assert prep.outcome[195] == 0.0 and prep.y[195] == 0.0


def test_gather_windows_equals_naive_slicing() -> None:
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    idx = np.array([4, 10, 49, 4])
    naive = np.stack([X[t - 4:t + 1] for t in idx])  # (B, W, F)
    out = gather_windows(torch.from_numpy(X), torch.from_numpy(idx), torch.arange(-4, 1))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out.numpy(), naive)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), f=st.integers(1, 4), w=st.integers(1, 8), data=st.data())
def test_gather_windows_property(n: int, f: int, w: int, data: st.DataObject) -> None:
    if w > n:
        return
    X = np.arange(n * f, dtype=np.float32).reshape(n, f)
    idx = np.array(data.draw(st.lists(st.integers(w - 1, n - 1), min_size=1, max_size=10)))
    got = gather_windows(torch.from_numpy(X), torch.from_numpy(idx), torch.arange(-w + 1, 1)).numpy()
    assert np.array_equal(got, np.stack([X[t - w + 1:t + 1] for t in idx]))


# ---------------------------------------------------------------- gaps


def test_gap_drops_match_the_published_gap_list() -> None:
    df = btc()  # all 72,569 bars, 28 gaps
    gaps = pd.read_csv(DATA_DIR / "BTC_USDT-1h.gaps.csv")
    assert len(gaps) == 28 and gaps["missing_bars"].sum() == 128
    found = find_gaps(df["timestamp"].to_numpy(), "1h")
    assert [g.missing for g in found] == gaps["missing_bars"].tolist()
    w, h = 6, 2
    prep = prepare(df, cfg_of({**SMALL, "window": w}, target={"horizon": h}))
    ts = df["timestamp"].to_numpy()
    before = np.array([parse_date(s) for s in gaps["last_bar_before_gap"]])
    rows = np.searchsorted(ts, before)
    assert (ts[rows] == before).all()
    # a gap between rows g-1 and g spoils every sample whose span t-w+1 .. t+h holds both
    expected = naive_rows(rows + 1, -h, w - 2)
    warm_end = indicators.warmup_bars(cfg_of(SMALL).features, prep.feature_names) + w - 1
    assert warm_end == 10  # rsi_5 (5 NaN rows) is the slowest input; macd_3_6_2 is not an input
    expected = {t for t in expected if warm_end <= t < len(df) - h}
    assert prep.dropped["gap"] == len(expected) == 28 * (w + h - 1)
    assert set(np.flatnonzero(~prep.valid)) >= expected
    assert prep.dropped == {"warmup": warm_end, "no_label": h, "gap": 28 * (w + h - 1), "nan": 0}
    assert prep.valid.sum() == len(df) - sum(prep.dropped.values())
    # every valid sample spans w + h contiguous hourly bars
    t = np.flatnonzero(prep.valid)
    assert (ts[t + h] - ts[t - w + 1] == (w + h - 1) * HOUR).all()


def test_gap_ffill_mode_fills_flat_bars_and_masks_them() -> None:
    df = btc(20_000)
    w, h = 6, 2
    prep = prepare(df, cfg_of({**SMALL, "window": w, "gap_policy": "ffill"}, target={"horizon": h}))
    missing = sum(g.missing for g in find_gaps(df["timestamp"].to_numpy(), "1h"))
    assert missing > 0 and len(prep.close) == len(df) + missing
    assert np.all(np.diff(prep.timestamps) == HOUR)
    assert prep.feature_names[-1] == "gap_mask"
    mask = prep.features[:, -1]
    assert mask.sum() == missing and np.array_equal(mask.astype(bool), prep.filled)
    filled = np.flatnonzero(prep.filled)
    assert (prep.close[filled] == prep.close[filled - 1]).all()  # flat at the last close
    table, filled2 = ds_mod.fill_gaps(df, "1h")
    assert (table["volume"].to_numpy()[filled2] == 0).all()
    assert (table["high"].to_numpy()[filled2] == table["close"].to_numpy()[filled2]).all()
    # labels (and the decision bar) are real bars; windows may hold filled bars
    valid = np.flatnonzero(prep.valid)
    assert not any(prep.filled[t:t + h + 1].any() for t in valid)
    assert any(prep.filled[t - w + 1:t + 1].any() for t in valid)
    expected = naive_rows(filled, -h, 0)
    assert prep.dropped["gap"] == len(expected)
    # the audit holds with filled bars too
    assert audit(df.iloc[:6000], cfg_of({**SMALL, "window": w, "gap_policy": "ffill"}), 4).ok


# ---------------------------------------------------------------- splits and embargo


def _check_embargo(ds: Any, embargo: int) -> None:
    pairs = [(ds.train_idx, ds.val_idx), (ds.val_idx, ds.test_idx)]
    for a, b in pairs:
        assert len(a) and len(b)
        assert b[0] - a[-1] - 1 >= embargo
        overlap = naive_rows(a, 1, ds.horizon) & naive_rows(b, -ds.window + 1, 0)
        if embargo >= ds.horizon + ds.window - 1:
            assert not overlap  # no label bar of the earlier split is an input bar of the later one
        else:
            assert overlap  # the test itself can fail: with a short embargo they do overlap
    assert ds.train_idx[-1] < ds.val_idx[0] and ds.val_idx[-1] < ds.test_idx[0]
    for idx in (ds.train_idx, ds.val_idx, ds.test_idx):
        assert (np.diff(idx) > 0).all() and ds.valid_rows[idx].all()


@pytest.mark.parametrize(("embargo", "h", "w"), [(None, 1, 32), (None, 4, 8), (100, 3, 16), (0, 1, 4)])
def test_fraction_split_is_chronological_with_embargo(embargo: int | None, h: int, w: int) -> None:
    prep = prepare(btc(5000), cfg_of({"window": w}, target={"horizon": h}))
    cfg = cfg_of({"window": w}, target={"horizon": h}, split={"embargo": embargo})
    ds = split(prep, cfg)
    e = h + w if embargo is None else embargo
    assert ds.embargo == e
    _check_embargo(ds, e)
    v = np.flatnonzero(prep.valid)
    n = len(v)
    # the later split starts where asked; the embargo comes out of the end of the earlier one
    assert ds.train_idx[0] == v[0] and ds.test_idx[-1] == v[-1]
    assert len(ds.test_idx) == n - round(0.7 * n) - round(0.15 * n)
    assert ds.test_idx[0] == v[round(0.7 * n) + round(0.15 * n)]
    assert ds.val_idx[0] == v[round(0.7 * n)]
    if e > 0:
        assert ds.train_idx[-1] < v[round(0.7 * n) - 1]
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous and ds.X.shape == prep.features.shape
    assert np.isfinite(ds.X).all() and ds.y.dtype == np.float32


def test_fractions_below_one_leave_out_the_oldest_samples() -> None:
    prep = prepare(btc(5000), cfg_of())
    ds = split(prep, cfg_of(split={"train": 0.5, "val": 0.1, "test": 0.1}))
    v = np.flatnonzero(prep.valid)
    assert ds.test_idx[-1] == v[-1] and ds.train_idx[0] == v[len(v) - round(0.7 * len(v))]


def test_date_split() -> None:
    df = btc(8000)
    cfg = cfg_of(split={"val_start": "2018-05-01", "test_start": "2018-06-15T12:00"})
    ds = split(prepare(df, cfg), cfg)
    vs, ts0 = parse_date("2018-05-01"), parse_date("2018-06-15T12:00")
    t = ds.timestamps
    assert (t[ds.train_idx] < vs).all() and (t[ds.val_idx] >= vs).all() and (t[ds.val_idx] < ts0).all()
    assert (t[ds.test_idx] >= ts0).all()
    # each later split starts at its date (the first valid sample there); the embargo is taken before it
    assert t[ds.val_idx[0]] == t[ds.valid_rows & (t >= vs)][0]
    assert t[ds.test_idx[0]] == t[ds.valid_rows & (t >= ts0)][0]
    _check_embargo(ds, ds.horizon + ds.window)


def test_fold_for_walk_forward() -> None:
    prep = prepare(btc(5000), cfg_of())
    cfg = cfg_of()
    d = fold(prep, slice(0, 3000), slice(3000, 3500), slice(3500, 4000), cfg)
    _check_embargo(d, 33)
    assert d.train_idx[-1] < 3000 - 33 and d.val_idx[0] >= 3000 and d.test_idx[-1] < 4000
    v = np.flatnonzero(prep.valid)
    assert np.array_equal(d.test_idx, v[(v >= 3500) & (v < 4000)])  # the test part is complete
    empty_test = fold(prep, slice(0, 3000), slice(3000, 3500), slice(5000, 5000), cfg)
    assert len(empty_test.test_idx) == 0 and empty_test.val_idx[-1] == v[v < 3500][-1]  # nothing to purge
    # a val part within the embargo of the test part is purged to nothing: empty, for the caller to skip
    short_val = fold(prep, slice(0, 3000), slice(3000, 3020), slice(3020, 4000), cfg)
    assert len(short_val.val_idx) == 0 and len(short_val.test_idx) > 0
    no_train = fold(prep, slice(0, 10), slice(3000, 3500), slice(3500, 4000), cfg)
    assert len(no_train.train_idx) == 0 and (no_train.scaler.scale == 1).all()
    with pytest.raises(ValueError, match="ordered"):
        fold(prep, slice(0, 3000), slice(2000, 3500), slice(3500, 4000), cfg)


# ---------------------------------------------------------------- scaling


def test_scaler_is_fitted_on_training_rows_only() -> None:
    df = btc(5000)
    cfg = cfg_of()
    prep = prepare(df, cfg)
    ds = split(prep, cfg)
    rows = sorted(naive_rows(ds.train_idx, -ds.window + 1, 0))
    train_rows = prep.features[rows]
    np.testing.assert_allclose(ds.scaler.center, train_rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ds.scaler.scale, train_rows.std(axis=0), rtol=1e-12)
    assert ds.scaler.n_rows == len(rows)
    assert not np.allclose(ds.scaler.center, np.nanmean(prep.features, axis=0), rtol=1e-6)
    # changing everything after the last training sample changes neither the split nor the scaler
    last = int(ds.train_idx[-1])
    df2 = df.copy()
    noise = np.random.default_rng(1).uniform(0.9, 1.1, len(df) - last - 1)  # per bar: changes every return
    for col in ("open", "high", "low", "close", "volume"):
        df2.loc[last + 1:, col] = df2.loc[last + 1:, col].to_numpy() * noise
    prep2 = prepare(df2, cfg)
    ds2 = split(prep2, cfg)
    assert np.array_equal(ds2.train_idx, ds.train_idx) and np.array_equal(ds2.test_idx, ds.test_idx)
    assert ds2.scaler.to_dict() == ds.scaler.to_dict()
    np.testing.assert_array_equal(ds2.X[: last + 1], ds.X[: last + 1])
    assert not np.allclose(prep2.features[ds.test_idx], prep.features[ds.test_idx])


@pytest.mark.parametrize("kind", ["robust", "minmax", "none"])
def test_other_scalers_and_json_round_trip(kind: str) -> None:
    cfg = cfg_of({"scaler": kind})
    prep = prepare(btc(3000), cfg)
    ds = split(prep, cfg)
    rows = sorted(naive_rows(ds.train_idx, -ds.window + 1, 0))
    tr = prep.features[rows]
    if kind == "robust":
        q = np.quantile(tr, [0.25, 0.5, 0.75], axis=0)
        np.testing.assert_allclose(ds.scaler.center, q[1])
        np.testing.assert_allclose(ds.scaler.scale, q[2] - q[0])
    elif kind == "minmax":
        np.testing.assert_allclose(ds.scaler.center, tr.min(axis=0))
        np.testing.assert_allclose(ds.scaler.scale, tr.max(axis=0) - tr.min(axis=0))
        assert ds.X[rows].min() >= 0 and ds.X[rows].max() <= 1 + 1e-6
    else:
        np.testing.assert_allclose(ds.X[rows], tr.astype(np.float32))
    back = Scaler.from_dict(json.loads(json.dumps(ds.scaler.to_dict())))
    np.testing.assert_array_equal(back.transform(prep.features, fill_nan=0.0), ds.X)
    again = apply(prep, back, ds.feature_names)
    np.testing.assert_array_equal(again.X, ds.X)
    # inference: every row with a clean input window, the label-less latest bars included
    assert np.array_equal(again.test_idx, np.flatnonzero(prep.inputs_valid)) and len(again.train_idx) == 0
    assert set(np.flatnonzero(prep.valid)) <= set(again.test_idx.tolist())
    assert again.test_idx[-1] == len(prep.valid) - 1 and not prep.valid[-1]


def test_scaler_clips_and_keeps_gap_mask_unscaled() -> None:
    X = np.r_[np.zeros(99), 1.0][:, None] * np.array([[1.0, 1.0]])
    s = Scaler("standard").fit(X, keep=[1])
    z = s.transform(np.array([[1.0, 1.0]]))
    assert z[0, 0] == pytest.approx(9.9498743710662) and z[0, 1] == 1.0
    assert s.transform(np.array([[5.0, 0.0]]))[0, 0] == 10.0  # clipped
    const = Scaler("standard").fit(np.ones((10, 1)))
    assert const.scale[0] == 1.0


def test_apply_rejects_other_features() -> None:
    cfg = cfg_of()
    prep = prepare(btc(3000), cfg)
    ds = split(prep, cfg)
    with pytest.raises(DataError, match="other features"):
        apply(prep, ds.scaler, ds.feature_names[:-1])


# ---------------------------------------------------------------- look-ahead


@pytest.mark.parametrize("kind", ["return", "direction", "volatility"])
def test_truncation_does_not_change_the_past(kind: str) -> None:
    df = btc(6000)
    cfg = cfg_of(target={"kind": kind, "horizon": 3})
    full = prepare(df, cfg)
    for t in (700, 2222, 4001, 5998):
        part = prepare(df.iloc[:t + 1], cfg)
        np.testing.assert_allclose(part.features, full.features[:t + 1], rtol=1e-12, atol=0)
        k = t + 1 - 3  # rows whose label span ends at or before t
        np.testing.assert_array_equal(part.y[:k], full.y[:k])
        np.testing.assert_array_equal(part.valid[:k], full.valid[:k])
        assert np.isnan(part.y[k:]).all()
    report = audit(df, cfg, n_points=6)
    assert report.ok, report.lines()
    assert len(report.cuts) == 6


def test_audit_flags_a_centered_moving_average(monkeypatch: pytest.MonkeyPatch) -> None:
    def peeking_sma(x: np.ndarray, n: int) -> np.ndarray:
        return pd.Series(x).rolling(n, center=True, min_periods=n).mean().to_numpy()

    monkeypatch.setattr(indicators, "sma", peeking_sma)
    report = audit(btc(4000), cfg_of(), n_points=3)
    assert not report.ok
    assert {"rel_sma_10", "rel_sma_20", "rel_sma_50", "bb_pctb_20_2", "bb_width_20_2"} <= set(report.names)
    assert "rsi_14" not in report.names and "label" not in report.names
    leak = next(x for x in report.leaks if x.name == "rel_sma_50")
    assert leak.cut - 25 * HOUR <= leak.first <= leak.cut
    assert any("rel_sma_50" in line for line in report.lines())


def test_audit_flags_a_shifted_feature_and_a_peeking_label(monkeypatch: pytest.MonkeyPatch) -> None:
    real_log_return, real_labels = indicators.log_return, ds_mod._labels

    def next_bar_return(close: np.ndarray, n: int) -> np.ndarray:  # shift(-1): tomorrow's return today
        return np.r_[real_log_return(close, n)[1:], np.nan]

    def late_labels(close: np.ndarray, horizon: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        y, _ = real_labels(close, horizon + 1, kind)  # one bar beyond the label span
        return y, real_labels(close, horizon, kind)[1]

    monkeypatch.setattr(indicators, "log_return", next_bar_return)
    monkeypatch.setattr(ds_mod, "_labels", late_labels)
    report = audit(btc(3000), cfg_of(), n_points=3)
    assert {"logret_1", "logret_24", "vol_24", "label"} <= set(report.names)
    assert "outcome" not in report.names and "rsi_14" not in report.names


# ---------------------------------------------------------------- bad inputs


def test_data_shorter_than_one_window() -> None:
    with pytest.raises(DataError, match=r"needs at least 82 \(indicator warm-up 49 \+ features\.window 32"):
        prepare(btc(60), cfg_of())


def test_split_leaving_a_split_empty() -> None:
    prep = prepare(btc(250), cfg_of())
    with pytest.raises(DataError, match=r"the val split has no samples.*raise split\.val"):
        split(prep, cfg_of())
    prep = prepare(btc(3000), cfg_of())
    with pytest.raises(DataError, match=r"the test split has no samples.*split\.val_start/test_start between"):
        split(prep, cfg_of(split={"val_start": "2017-09-01", "test_start": "2030-01-01"}))
    with pytest.raises(DataError, match="the train split has no samples"):
        split(prep, cfg_of(split={"val_start": "2010-01-01", "test_start": "2017-09-15"}))
    with pytest.raises(ConfigError, match="must be before split.test_start"):
        split(prep, cfg_of(split={"val_start": "2017-10-01", "test_start": "2017-09-15"}))


def test_no_inputs_is_a_config_error() -> None:
    none_left = {"rsi": [], "bbands": [], "returns": [], "volatility": [], "volume_z": [], "price_rel": False}
    with pytest.raises(ConfigError, match="features.inputs: all"):
        prepare(btc(500), cfg_of(none_left))


def test_unsorted_or_mistimed_candles() -> None:
    df = btc(500)
    with pytest.raises(DataError, match="strictly increasing"):
        prepare(df.iloc[::-1], cfg_of())
    with pytest.raises(DataError, match=r"does data\.timeframe \(1m\) match"):
        prepare(df, build_config({"data": {"timeframe": "1m"}}))
    with pytest.raises(DataError, match="off the 4h grid"):
        prepare(df, build_config({"data": {"timeframe": "4h"}, "features": {"gap_policy": "ffill"}}))
