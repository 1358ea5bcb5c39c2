"""Cross-sectional transforms and IC metrics against independent code (scipy, statsmodels, a plain loop)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cryptonorm.evaluate import ic
from cryptonorm.features import cross_section as cs


def _panel(t: int = 40, c: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, c))
    mask = rng.random((t, c)) > 0.25  # coins not trading at t
    x[rng.random((t, c)) < 0.05] = np.nan
    x[5, :3] = 1.25  # ties
    return x, mask


def test_zscore_and_rank_match_a_per_timestamp_loop() -> None:
    x, mask = _panel()
    z, r = cs.zscore(x, mask), cs.rank(x, mask)
    for t in range(len(x)):
        ok = mask[t] & np.isfinite(x[t])
        assert np.isnan(z[t, ~ok]).all() and np.isnan(r[t, ~ok]).all()
        v = x[t, ok]
        if len(v) == 0:
            continue
        if v.std() > 0:
            np.testing.assert_allclose(z[t, ok], stats.zscore(v), atol=1e-12)
        want = (stats.rankdata(v) - 1) / (len(v) - 1) if len(v) > 1 else np.full(1, 0.5)
        np.testing.assert_allclose(r[t, ok], want, atol=1e-12)


def test_three_dimensional_features_are_transformed_per_feature() -> None:
    x, mask = _panel()
    x3 = np.stack([x, 2 * x + 1], axis=2)
    out = cs.transform(x3, "zscore", mask)
    np.testing.assert_allclose(out[..., 0], cs.zscore(x, mask), equal_nan=True)
    np.testing.assert_allclose(out[..., 1], cs.zscore(x, mask), atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(cs.transform(x3, "rank", mask)[..., 1], cs.rank(x, mask), equal_nan=True)


def test_targets_and_universe_features() -> None:
    x, mask = _panel()
    ex = cs.target(x, "excess_return", mask)
    for t in range(len(x)):
        ok = mask[t] & np.isfinite(x[t])
        if ok.any():
            np.testing.assert_allclose(ex[t, ok], x[t, ok] - x[t, ok].mean(), atol=1e-12)
            u = cs.universe_features(x, mask)[t]
            np.testing.assert_allclose(u, [x[t, ok].mean(), x[t, ok].std()], atol=1e-12)
    np.testing.assert_allclose(cs.target(x, "rank", mask), cs.rank(x, mask), equal_nan=True)
    with pytest.raises(ValueError, match="excess_return"):
        cs.target(x, "sharpe", mask)


def test_row_t_reads_only_row_t() -> None:
    """No look-ahead across coins: changing the future of one coin changes nothing at earlier times."""
    x, mask = _panel()
    y = x.copy()
    y[30:, 2] += 100.0
    for mode in ("zscore", "rank"):
        np.testing.assert_array_equal(cs.transform(x, mode, mask)[:30], cs.transform(y, mode, mask)[:30])


def test_ic_and_rank_ic_are_pearson_and_spearman_per_timestamp() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(60, 8))
    lab = 0.2 * f + rng.normal(size=(60, 8))
    f[rng.random(f.shape) < 0.2] = np.nan
    lab[3, :6] = np.nan  # two coins left: below min_coins
    got, rgot = ic.ic_series(f, lab), ic.ic_series(f, lab, rank=True)
    for t in range(60):
        ok = np.isfinite(f[t]) & np.isfinite(lab[t])
        if ok.sum() < ic.MIN_COINS:
            assert np.isnan(got[t]) and np.isnan(rgot[t])
            continue
        assert got[t] == pytest.approx(stats.pearsonr(f[t, ok], lab[t, ok])[0], abs=1e-12)
        assert rgot[t] == pytest.approx(stats.spearmanr(f[t, ok], lab[t, ok])[0], abs=1e-12)


def test_newey_west_t_matches_statsmodels_hac() -> None:
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(2)
    e = rng.normal(size=400)
    x = 0.05 + np.convolve(e, [1.0, 0.6, 0.3], "same")  # autocorrelated, as overlapping-horizon ICs are
    for lags in (0, 3, 10):
        fit = sm.OLS(x, np.ones(len(x))).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True})
        assert ic.newey_west_t(x, lags) == pytest.approx(float(fit.tvalues[0]), rel=1e-10)


def test_summary_icir_hit_rate_and_decay() -> None:
    rng = np.random.default_rng(3)
    t, c = 300, 10
    close = np.exp(np.cumsum(rng.normal(0, 0.01, size=(t, c)), axis=0))
    fwd1 = np.full((t, c), np.nan)
    fwd1[:-1] = np.log(close[1:] / close[:-1])
    f = fwd1 + rng.normal(0, 0.01, size=(t, c))  # knows the next bar, and nothing later
    s = ic.summarize(f, fwd1)
    series = ic.ic_series(f, fwd1)
    v = series[np.isfinite(series)]
    assert s.ic == pytest.approx(v.mean()) and s.icir == pytest.approx(v.mean() / v.std(ddof=1))
    assert s.hit_rate == pytest.approx((v > 0).mean()) and s.timestamps == t - 1
    decay = ic.ic_decay(f, close, [1, 4, 16])
    assert decay[1] == pytest.approx(s.ic) and decay[1] > decay[4] > decay[16] > 0  # fades with the horizon
