"""The offline market: deterministic, crypto-like, and honest about its planted signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cryptonorm.config import SyntheticConfig
from cryptonorm.data.synthetic import CHUNK, SyntheticExchange
from cryptonorm.timeframes import parse_date, timeframe_ms

NOW = parse_date("2023-01-01")


def candles(signal: float = 0.0, seed: int = 0, tf: str = "1h", n: int = 20_000) -> np.ndarray:
    ex = SyntheticExchange(SyntheticConfig(seed=seed, signal=signal), now_ms=NOW)
    start = ex.start_ms(tf)
    rows: list[list[float]] = []
    since = start
    while len(rows) < n:
        page = ex.fetch_ohlcv("BTC/USDT", tf, since, 1000)
        if not page:
            break
        rows += page
        since = int(page[-1][0]) + timeframe_ms(tf)
    return np.asarray(rows[:n])


def test_deterministic_and_independent_of_how_far_one_asks() -> None:
    a = candles(seed=3, n=5000)
    b = candles(seed=3, n=5000)
    np.testing.assert_array_equal(a, b)
    late = SyntheticExchange(SyntheticConfig(seed=3), now_ms=NOW + 400 * 86_400_000)
    since = int(a[4000, 0])
    np.testing.assert_array_equal(np.asarray(late.fetch_ohlcv("BTC/USDT", "1h", since, 1000)), a[4000:5000])
    assert not np.array_equal(a, candles(seed=4, n=5000))


def test_continuous_across_generator_chunks() -> None:
    a = candles(tf="15m", n=CHUNK + 10)
    r = np.diff(np.log(a[:, 4]))
    # no jump in level or volatility at the chunk border
    assert abs(r[CHUNK - 1]) < 10 * r.std()
    assert a[CHUNK, 1] == a[CHUNK - 1, 4]  # open = previous close


def test_paging_contract() -> None:
    ex = SyntheticExchange(now_ms=NOW)
    page = ex.fetch_ohlcv("ETH/USDT", "4h", parse_date("2021-06-01T01:00"), 500)
    ts = np.array([r[0] for r in page])
    assert len(page) == 500 and ts[0] == parse_date("2021-06-01T04:00")  # first bar opening at/after since
    assert (np.diff(ts) == timeframe_ms("4h")).all()
    assert ex.fetch_ohlcv("ETH/USDT", "4h", NOW + 10 * 86_400_000, 10) == []  # nothing in the future
    last = ex.fetch_ohlcv("ETH/USDT", "1h", NOW - 3_600_000, 10)
    assert [r[0] for r in last] == [NOW - 3_600_000, NOW]  # the forming candle is served, like an exchange
    with pytest.raises(KeyError):
        ex.fetch_ohlcv("DOGE/EUR", "1h", None, 10)


def test_ohlc_consistent_and_crypto_like() -> None:
    a = candles(n=20_000)
    o, h, low, c, v = a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5]
    assert (h >= np.maximum(o, c)).all() and (low <= np.minimum(o, c)).all() and (low > 0).all()
    assert (v > 0).all()
    r = np.diff(np.log(c))
    assert stats.kurtosis(r) > 1.0  # fat tails
    # volatility clustering: |r| is autocorrelated although r is not
    assert np.corrcoef(np.abs(r[:-1]), np.abs(r[1:]))[0, 1] > 0.1
    # intraday seasonality in volume: busier at 14:00 UTC than at 02:00 UTC
    hours = (a[:, 0] // 3_600_000) % 24
    assert v[hours == 14].mean() > 1.2 * v[hours == 2].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_signal_means_no_autocorrelation(seed: int) -> None:
    r = np.diff(np.log(candles(signal=0.0, seed=seed, n=20_000)[:, 4]))
    ac = np.corrcoef(r[:-1], r[1:])[0, 1]
    assert abs(ac) < 4 / np.sqrt(len(r))  # within ~4 standard errors of zero


def test_planted_signal_is_a_trend_seen_in_past_returns_only() -> None:
    r = np.diff(np.log(candles(signal=0.2, n=20_000)[:, 4]))
    past = np.convolve(r, np.ones(20), "full")[: len(r)]  # sum of returns t-19..t: past only
    hit = np.mean(np.sign(past[:-1]) == np.sign(r[1:]))
    assert hit > 0.5 + 4 * 0.5 / np.sqrt(len(r))
    # the same rule on a market without signal finds nothing
    r0 = np.diff(np.log(candles(signal=0.0, n=20_000)[:, 4]))
    past0 = np.convolve(r0, np.ones(20), "full")[: len(r0)]
    assert abs(np.mean(np.sign(past0[:-1]) == np.sign(r0[1:])) - 0.5) < 4 * 0.5 / np.sqrt(len(r0))


@pytest.mark.parametrize("tf", ["1m", "15m", "1d", "1w"])
def test_any_timeframe(tf: str) -> None:
    a = candles(tf=tf, n=50)
    assert len(a) == 50 and (np.diff(a[:, 0]) == timeframe_ms(tf)).all()
