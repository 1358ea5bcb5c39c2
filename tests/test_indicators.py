"""Indicators against TA-Lib on real BTC/USDT 1h candles (the first 20,000 bars, which hold 14 real gaps).

TA-Lib is the oracle: same NaN warm-up, then equal to 1e-9 relative.
"""

from __future__ import annotations

import re
import statistics
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptonorm.config import FeaturesConfig
from cryptonorm.data.importers import read_user_file
from cryptonorm.features import indicators as ind
from cryptonorm.features import rolling

talib = pytest.importorskip("talib")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BTC_USDT-1h.csv.gz"
RTOL = 1e-9


@lru_cache(maxsize=1)
def _btc() -> pd.DataFrame:
    if not DATA.exists():
        pytest.skip(f"real data {DATA} not present")
    return read_user_file(DATA, "1h").iloc[:20_000].reset_index(drop=True)


def _ohlc() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = _btc()
    return tuple(df[k].to_numpy() for k in ("high", "low", "close"))  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here checks the numpy path, not TA-Lib against itself (compute_features would otherwise
    hand SMA, EMA, RSI, MACD and ATR to TA-Lib, installed here); test_talib_engine_* turns it back on."""
    monkeypatch.setattr(ind, "_TALIB", False)


def assert_like_talib(ours: np.ndarray, ref: np.ndarray, atol: np.ndarray | float = 0.0) -> None:
    """Same NaN warm-up as TA-Lib, then |ours - ref| <= RTOL * |ref| + atol."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg="warm-up NaNs differ from TA-Lib")
    ok = ~np.isnan(ref)
    assert ok.sum() > 19_000
    err = np.abs(ours[ok] - ref[ok])
    tol = RTOL * np.abs(ref[ok]) + (atol[ok] if isinstance(atol, np.ndarray) else atol)
    worst = int(np.argmax(err - tol))
    assert (err <= tol).all(), f"row {np.flatnonzero(ok)[worst]}: {ours[ok][worst]!r} vs TA-Lib {ref[ok][worst]!r}"


@pytest.mark.parametrize("n", [2, 5, 20, 50, 200])
def test_sma_equals_talib(n: int) -> None:
    _, _, c = _ohlc()
    assert_like_talib(ind.sma(c, n), talib.SMA(c, n))


@pytest.mark.parametrize("n", [2, 12, 26, 100])
def test_ema_equals_talib_sma_seeded(n: int) -> None:
    _, _, c = _ohlc()
    assert_like_talib(ind.ema(c, n), talib.EMA(c, n))


@pytest.mark.parametrize("n", [2, 14, 30])
def test_rsi_equals_talib_wilder(n: int) -> None:
    _, _, c = _ohlc()
    ours = ind.rsi(c, n)
    assert_like_talib(ours, talib.RSI(c, n))
    # Wilder's smoothing is not a simple moving average of gains and losses: that would differ clearly
    d = np.diff(c)
    g = pd.Series(np.where(d > 0, d, 0.0)).rolling(n).mean().to_numpy()
    lo = pd.Series(np.where(d < 0, -d, 0.0)).rolling(n).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        sma_rsi = 100 * g / (g + lo)
    assert np.nanmax(np.abs(sma_rsi - ours[1:])) > 1.0


@pytest.mark.parametrize("n", [1, 14, 30])
def test_atr_equals_talib_wilder(n: int) -> None:
    h, lo, c = _ohlc()
    assert_like_talib(ind.atr(h, lo, c, n), talib.ATR(h, lo, c, n))


@pytest.mark.parametrize(("n", "k"), [(20, 2.0), (10, 1.5), (50, 3.0), (5, 2.5)])
def test_bbands_equal_talib_population_std(n: int, k: float) -> None:
    _, _, c = _ohlc()
    up, mid, low, pctb, width = ind.bbands(c, n, k)
    ref_up, ref_mid, ref_low = talib.BBANDS(c, n, k, k, 0)
    assert_like_talib(up, ref_up)
    assert_like_talib(mid, ref_mid)
    assert_like_talib(low, ref_low)
    # %B and bandwidth from TA-Lib's bands (TA-Lib's running-sum variance is only ~1e-11 exact, and the band
    # span is a small difference of price-sized numbers, hence the looser tolerance here)
    np.testing.assert_allclose(pctb, (c - ref_low) / (ref_up - ref_low), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(width, (ref_up - ref_low) / ref_mid, rtol=1e-6, atol=1e-12)
    # the sample std (ddof=1) would be visibly wider
    sd1 = pd.Series(c).rolling(n).std(ddof=1).to_numpy()
    assert np.nanmax(np.abs((mid + k * sd1) - ref_up) / ref_up) > 1e-5


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (3, 10, 16), (12, 26, 1)])
def test_macd_equals_talib(fast: int, slow: int, signal: int) -> None:
    _, _, c = _ohlc()
    ours = ind.macd(c, fast, slow, signal)
    ref = talib.MACD(c, fast, slow, signal)
    # The MACD line is a difference of two price-sized EMAs: its float64 precision is ~1e-16 x close, so
    # where the line crosses zero only an absolute bound is meaningful (the worst seen is ~1.2e-15 x close).
    for a, b in zip(ours, ref, strict=True):
        assert_like_talib(a, b, atol=1e-12 * c)
    # TA-Lib starts both EMAs at bar slow-1; the fast one is not talib.EMA(fast), and alphas are 2/(n+1)
    plain = talib.EMA(c, fast) - talib.EMA(c, slow)
    first = slow + signal - 2
    assert np.abs(plain[first:first + 5] - ref[0][first:first + 5]).max() > 1e-6


def test_macd_uses_two_over_n_plus_one_not_fixed_alphas() -> None:
    # "classic" fixed alphas 0.15 / 0.075 (TA-Lib MACDFIX) are NOT what talib.MACD(12, 26, 9) uses
    _, _, c = _ohlc()
    ref = talib.MACD(c, 12, 26, 9)[0]
    fixed = talib.MACDFIX(c, 9)[0]
    ok = ~np.isnan(ref) & ~np.isnan(fixed)
    assert np.abs(ref[ok] - fixed[ok]).max() > 1e-3
    assert_like_talib(ind.macd(c, 12, 26, 9)[0], ref, atol=1e-12 * c)


def test_returns_volatility_volume_z_match_plain_pandas() -> None:
    df = _btc()
    c, v = df["close"], df["volume"]
    for n in (1, 4, 24):
        np.testing.assert_allclose(ind.log_return(c.to_numpy(), n), np.log(c / c.shift(n)), rtol=1e-12)
    r1 = np.log(c / c.shift(1))
    for n in (2, 24):
        np.testing.assert_allclose(ind.volatility(c.to_numpy(), n), r1.rolling(n).std(ddof=0), rtol=1e-9)
        ref = (v - v.rolling(n).mean()) / v.rolling(n).std(ddof=0)
        np.testing.assert_allclose(ind.volume_zscore(v.to_numpy(), n), ref, rtol=1e-7, atol=1e-9)


def _exact_mean_std(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Window mean and population std in exact rational arithmetic (statistics.fmean / pstdev), NaN where
    the window is incomplete or holds a NaN."""
    mean, sd = np.full(len(x), np.nan), np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        w = x[i - n + 1:i + 1]
        if not np.isnan(w).any():
            mean[i], sd[i] = statistics.fmean(w), statistics.pstdev(w)
    return mean, sd


def test_rolling_mean_std_exact_on_near_flat_windows() -> None:
    """Flat and near-flat stretches beside 10% jumps at BTC-like prices: a running sum of values or of squares
    (pandas, TA-Lib, a blocked running sum) leaves noise of ~1e-8 x price there; ours stays exact."""
    rng = np.random.default_rng(3)
    parts = [np.full(45, 30_000.0), np.full(30, 33_000.0), 33_000.0 * (1 + 1e-9 * rng.normal(size=40)),
             np.full(7, 29_700.0), 30_000.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 80))), np.full(50, 0.1),
             np.full(25, 1e6), 0.1 + 1e-12 * np.arange(30)]
    x = np.concatenate(parts * 3)
    for n in (1, 2, 5, 7, 20, 64):
        mean, sd = rolling.rolling_mean_std(x, n)
        ref_mean, ref_sd = _exact_mean_std(x, n)
        np.testing.assert_array_equal(np.isnan(sd), np.isnan(ref_sd))
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-14, atol=0)
        np.testing.assert_allclose(sd, ref_sd, rtol=1e-12, atol=0)  # atol 0: a flat window's std is exactly 0
        assert (sd[n - 1:][ref_sd[n - 1:] == 0] == 0).all()
    # the test has teeth: pandas' add/remove rolling std misses the near-flat windows by far more
    ref_sd = _exact_mean_std(x, 20)[1]
    pd_sd = pd.Series(x).rolling(20).std(ddof=0).to_numpy()
    assert np.nanmax(np.abs(pd_sd - ref_sd) / np.where(ref_sd > 0, ref_sd, 1e-300)) > 1e-6


def test_rolling_mean_std_nan_only_in_the_windows_that_hold_one() -> None:
    _, _, c = _ohlc()
    x = c[:3000].copy()
    x[[0, 1, 500, 503, 2999]] = np.nan
    for n in (1, 3, 24):
        mean, sd = rolling.rolling_mean_std(x, n)
        ref_mean, ref_sd = _exact_mean_std(x, n)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-14)
        np.testing.assert_allclose(sd, ref_sd, rtol=1e-12)
    assert np.isnan(rolling.rolling_mean_std(np.full(5, np.nan), 2)[0]).all()
    np.testing.assert_array_equal(rolling.rolling_mean(x, 24), rolling.rolling_mean_std(x, 24)[0])


@pytest.mark.parametrize("alpha", [1.0, 2 / 3, 0.5, 2 / 13, 1 / 14, 2 / 201, 1 / 5000])
def test_recursion_equals_scipy_lfilter(alpha: float) -> None:
    """The blocked closed form against scipy.signal.lfilter's sequential IIR filter, on real closes of
    every length around the block size (the block is ~345 / -ln(1 - alpha) values)."""
    from scipy.signal import lfilter

    _, _, c = _ohlc()
    size = int(np.log(1e150) / -np.log(1 - alpha)) if alpha < 1 else 1
    for m in sorted({1, 2, 3, size - 1, size, size + 1, 2 * size + 3, len(c) - 1} - {0}):
        x = c[1:m + 1]
        ref = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * c[0]])[0]
        np.testing.assert_allclose(rolling.recursive(x, alpha, c[0]), ref, rtol=1e-13, atol=0)
    x = c[1:2000].copy()
    x[700] = np.nan  # a NaN carries forward forever, and leaves the values before it alone, as the loop does
    ref = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * c[0]])[0]
    np.testing.assert_allclose(rolling.recursive(x, alpha, c[0]), ref, rtol=1e-13, atol=0)
    assert np.isnan(ref[700:]).all()


def test_rolling_std_is_exact_two_pass() -> None:
    _, _, c = _ohlc()
    for n in (2, 20, 200):
        ref = np.full(len(c), np.nan)
        ref[n - 1:] = np.lib.stride_tricks.sliding_window_view(c, n).std(axis=1)
        np.testing.assert_allclose(ind.rolling_std(c, n), ref, rtol=1e-12)


def test_degenerate_windows_are_neutral_not_nan() -> None:
    flat = np.full(100, 5.0)
    assert np.all(ind.rsi(flat, 14)[14:] == 50.0)
    _, _, _, pctb, width = ind.bbands(flat, 20, 2.0)
    assert np.all(pctb[19:] == 0.5) and np.all(width[19:] == 0.0)
    assert np.all(ind.volume_zscore(np.zeros(50), 10)[9:] == 0.0)


def test_short_input_is_all_nan_without_error() -> None:
    c = np.array([1.0, 2.0, 3.0])
    for out in (ind.sma(c, 5), ind.ema(c, 5), ind.rsi(c, 5), ind.atr(c, c, c, 5), *ind.macd(c, 12, 26, 9)):
        assert len(out) == 3 and np.isnan(out).all()


def test_compute_features_columns_and_warmup() -> None:
    df = _btc()
    f = FeaturesConfig(bbands=[(20, 2.0), (10, 2.5)], macd=[(12, 26, 9)], sma=[10, 50], ema=[12, 26])
    out = ind.compute_features(df, f)
    assert list(out.columns) == ind.CANDLE_COLUMNS + ind.feature_columns(f)
    assert len(out) == len(df) and (out["timestamp"].to_numpy() == df["timestamp"].to_numpy()).all()
    for name in ("bb_upper_10_2.5", "bb_pctb_20_2", "macd_signal_12_26_9", "rel_ema_26", "volz_24", "atr_14"):
        assert name in out.columns
    # each column's warm-up is exactly as documented; warmup_bars is the longest
    first = {c: int(np.argmax(out[c].notna().to_numpy())) for c in out.columns}
    assert first["sma_50"] == 49 and first["rsi_14"] == 14 and first["macd_12_26_9"] == 33
    assert first["atr_14"] == 14 and first["logret_24"] == 24 and first["vol_24"] == 24
    assert first["volz_24"] == 23 and first["bb_width_10_2.5"] == 9
    assert first == ind.column_warmup(f)
    assert max(first.values()) == ind.warmup_bars(f)
    assert ind.warmup_bars(f, ["rsi_14", "logret_24"]) == 24
    assert out.iloc[ind.warmup_bars(f):].notna().all().all()
    np.testing.assert_allclose(out["rel_sma_10"], df["close"] / out["sma_10"] - 1)


def test_every_column_is_in_the_features_guide_table() -> None:
    """The column definitions live once, in the Features table of docs/guide/features.md (the docstring links
    to it)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "features.md").read_text()
    f = FeaturesConfig()
    for col in [*ind.feature_columns(f), "funding_mean_3", "funding_z_3"]:
        stem = re.match(r"^([a-z_]+?)_\d", col)
        assert stem is not None and f"| {stem.group(1)}_{{" in doc, f"{col} is missing from the features table"
    assert "| gap_mask |" in doc and "| funding_rate |" in doc
    assert "docs/guide/features.md" in (ind.__doc__ or "")


def test_input_columns() -> None:
    df = _btc().iloc[:300]
    cols = list(ind.compute_features(df, FeaturesConfig()).columns)
    stat = ind.input_columns(cols, FeaturesConfig(inputs="stationary"))
    assert "close" not in stat and "sma_10" not in stat and "macd_12_26_9" not in stat and "atr_14" not in stat
    assert {"rsi_14", "bb_pctb_20_2", "bb_width_20_2", "logret_1", "vol_24", "volz_24", "rel_sma_50"} <= set(stat)
    every = ind.input_columns(cols, FeaturesConfig(inputs="all"))
    assert every == cols[1:]


def test_format_k() -> None:
    assert ind.format_k(2.0) == "2" and ind.format_k(2.5) == "2.5" and ind.format_k(3) == "3"


def test_features_are_causal_on_real_data() -> None:
    df = _btc().iloc[:3000]
    f = FeaturesConfig()
    full = ind.compute_features(df, f)
    for t in (200, 1234, 2998):
        part = ind.compute_features(df.iloc[:t + 1], f)
        pd.testing.assert_frame_equal(part, full.iloc[:t + 1], rtol=1e-12)


def test_talib_engine_gives_the_same_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TA-Lib installed, compute_features hands SMA, EMA, RSI, MACD and ATR to it: same frame to 1e-9."""
    df = _btc()
    f = FeaturesConfig(sma=[2, 10, 50], ema=[2, 12, 26], rsi=[2, 14], macd=[(12, 26, 9), (3, 10, 16)], atr=[1, 14])
    ours = ind.compute_features(df, f)
    calls: list[str] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            calls.append(name)
            return getattr(talib, name)

    monkeypatch.setattr(ind, "_TALIB", Spy())
    engine = ind.compute_features(df, f)
    assert {"SMA", "EMA", "RSI", "MACD", "ATR"} <= set(calls)
    c = df["close"].to_numpy()
    for col in ours.columns:
        # absolute bounds where a column is a small difference: MACD of two EMAs (see test_macd_*), rel_* =
        # close / average - 1 (TA-Lib's running-sum SMA is ~1e-12 relative exact, so rel_* ~1e-12 absolute)
        atol = 1e-12 * c if col.startswith("macd") else 1e-11 if col.startswith("rel_") else 0.0
        assert_like_talib(engine[col].to_numpy(), ours[col].to_numpy(), atol=atol)


def test_talib_engine_leaves_flat_rsi_and_nan_input_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ind, "_TALIB", talib)
    flat = np.r_[np.full(40, 5.0), np.linspace(5, 6, 40)]
    assert talib.RSI(flat, 14)[14] == 0.0  # TA-Lib: 0 where nothing moved
    assert (ind.rsi(flat, 14)[14:40] == 50.0).all()
    c = _ohlc()[2][:500].copy()
    c[100] = np.nan  # TA-Lib's running sum would carry it to every later SMA; ours only to the windows holding it
    s = ind.sma(c, 5)
    assert np.isnan(s[100:105]).all() and not np.isnan(s[105:]).any()
