"""Machine-independent draws: right distributions, right functions, and the same bits everywhere."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from cryptonorm.config import SyntheticConfig
from cryptonorm.data import draws
from cryptonorm.data.synthetic import SyntheticExchange
from cryptonorm.timeframes import parse_date

NOW = parse_date("2023-01-01")


def test_exp_and_log_agree_with_libm_to_the_last_bits() -> None:
    x = np.concatenate([np.linspace(-700, 700, 20_001), np.random.default_rng(0).normal(0, 3, 20_000)])
    ref = np.array([math.exp(v) for v in x])
    assert np.max(np.abs(draws.exp(x) - ref) / np.spacing(ref)) <= 2
    y = np.concatenate([ref[ref > 0], [1.0, 0.5, 2.0, 1.0 + 1e-12, 1.0 - 1e-12]])
    refl = np.array([math.log(v) for v in y])
    assert np.max(np.abs(draws.log(y) - refl) / np.maximum(np.spacing(np.abs(refl)), 1e-300)) <= 3


def test_cos_hour_is_the_cosine_of_the_hour() -> None:
    h = np.arange(-50, 50)
    np.testing.assert_allclose(draws.cos_hour(h), np.cos(2 * np.pi * h / 24), atol=2e-15)


def test_uniforms_use_53_bits_of_the_raw_stream() -> None:
    u = draws.uniforms(draws.bits("u"), 10)
    raw = np.random.PCG64(draws.key("u")).random_raw(10)
    np.testing.assert_array_equal(u, np.array([(int(r) >> 11) / 2.0**53 for r in raw]))


@pytest.mark.parametrize(("name", "sample", "cdf"), [
    ("normal", lambda bg: draws.normals(bg, 50_000), stats.norm.cdf),
    ("t4", lambda bg: draws.student_t(bg, 4.0, 50_000), stats.t(4).cdf),
    ("t2.5", lambda bg: draws.student_t(bg, 2.5, 50_000), stats.t(2.5).cdf),
    ("gamma1", lambda bg: draws.gammas(bg, 1.0, 50_000), stats.gamma(1.0).cdf),
    ("gamma3.7", lambda bg: draws.gammas(bg, 3.7, 50_000), stats.gamma(3.7).cdf),
])
def test_distributions_match_scipy(name: str, sample, cdf) -> None:  # type: ignore[no-untyped-def]
    x = sample(draws.bits("dist", name))
    assert len(x) == 50_000
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_ar1_is_the_recursive_filter() -> None:
    x = np.random.default_rng(1).normal(size=5000)
    ref, _ = lfilter([1.0], [1.0, -0.97], x, zi=[0.97 * 0.3])
    np.testing.assert_allclose(draws.ar1(x, 0.97, 0.3), ref, rtol=1e-12, atol=1e-12)


def test_market_uses_no_platform_dependent_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIMD exp/log/cos and Generator distributions differ by CPU and numpy version: none may be used."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("platform-dependent numpy function used")

    for fn in ("exp", "log", "cos", "sin", "power", "log1p", "expm1"):
        monkeypatch.setattr(np, fn, boom)
    monkeypatch.setattr(np.random, "default_rng", boom)
    ex = SyntheticExchange(SyntheticConfig(seed=3, signal=0.3), now_ms=NOW)
    assert len(ex.fetch_ohlcv("ETH/USDT", "1h", None, 500)) == 500


def test_the_market_hashes_to_a_fixed_constant() -> None:
    """The same config gives the same bits on every machine: a small realization against a constant.

    If this fails after an intended change to the market, every synthetic number in the docs changes too.
    """
    ex = SyntheticExchange(SyntheticConfig(seed=7, signal=0.5), now_ms=NOW)
    rows = np.asarray(ex.fetch_ohlcv("BTC/USDT", "1h", parse_date("2022-06-01"), 1000), dtype=np.float64)
    assert len(rows) == 1000
    assert hashlib.sha256(rows.tobytes()).hexdigest()[:16] == "ee739266dc29537e"
