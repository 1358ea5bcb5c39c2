"""Volatility forecasting: realized measures and labels, metrics, Diebold-Mariano, baselines, losses and the
vol_target backtest, each against an independent computation (statsmodels OLS, arch, scipy, plain loops)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cryptonorm.config import BacktestConfig, build_config
from cryptonorm.data.importers import read_user_file
from cryptonorm.errors import DataError
from cryptonorm.evaluate import vol_baselines as vb
from cryptonorm.evaluate import vol_metrics as vm
from cryptonorm.features import realized
from cryptonorm.features.dataset import prepare
from cryptonorm.learn.losses import make_loss
from cryptonorm.trade.vol_target import risk_tracking, simulate_vol_target

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FEATS = {"sma": [5], "ema": [5], "rsi": [5], "macd": [[3, 6, 2]], "bbands": [[5, 2.0]], "atr": [5],
         "returns": [1, 2], "volatility": [4], "volume_z": [4], "window": 8}


@lru_cache(maxsize=1)
def _btc4h() -> pd.DataFrame:
    path = DATA_DIR / "BTC_USDT-4h.csv.gz"
    if not path.exists():
        pytest.skip(f"real data {path} not present")
    return read_user_file(path, "4h")


def btc4h(n: int = 6000) -> pd.DataFrame:
    return _btc4h().iloc[-n:].reset_index(drop=True).copy()


def vol_cfg(**target: object) -> object:
    return build_config({"data": {"timeframe": "4h"}, "features": FEATS,
                         "target": {"kind": "volatility", "horizon": 6, **target}})


# ---------------------------------------------------------------- realized measures and labels


def test_bar_variance_estimators_match_their_formulas_bar_by_bar() -> None:
    df = btc4h(300)
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    close = realized.bar_variance(o, h, lo, c, "close")
    park = realized.bar_variance(o, h, lo, c, "parkinson")
    gk = realized.bar_variance(o, h, lo, c, "garman_klass")
    assert math.isnan(close[0])
    for i in (1, 57, 299):
        assert close[i] == pytest.approx(math.log(c[i] / c[i - 1]) ** 2, rel=1e-12)
        assert park[i] == pytest.approx(math.log(h[i] / lo[i]) ** 2 / (4 * math.log(2)), rel=1e-12)
        want = 0.5 * math.log(h[i] / lo[i]) ** 2 - (2 * math.log(2) - 1) * math.log(c[i] / o[i]) ** 2
        assert gk[i] == pytest.approx(want, rel=1e-12)
    assert (park >= 0).all() and (gk >= 0).all()
    # a close-to-close return across an outage of k bars counts per bar
    span = np.ones(300)
    span[57] = 4
    assert realized.bar_variance(o, h, lo, c, "close", span)[57] == pytest.approx(close[57] / 4, rel=1e-12)


@pytest.mark.parametrize("form", ["vol", "log_var", "var"])
@pytest.mark.parametrize("rv", ["close", "parkinson", "garman_klass"])
def test_labels_are_the_form_of_the_next_h_bars_mean_variance(form: str, rv: str) -> None:
    df = btc4h(400)
    prep = prepare(df, vol_cfg(vol_form=form, rv=rv))  # type: ignore[arg-type]
    m = realized.bar_variance(*(df[k].to_numpy() for k in ("open", "high", "low", "close")), rv)  # type: ignore[misc]
    for t in (100, 250, 393):
        var = float(np.mean(m[t + 1:t + 7]))  # bars t+1 .. t+6 only
        want = {"vol": math.sqrt(var), "log_var": math.log(var), "var": var}[form]
        assert prep.y[t] == pytest.approx(want, rel=1e-9)
        assert realized.from_form(np.array([prep.y[t]]), form)[0] == pytest.approx(var, rel=1e-9)
    assert np.isnan(prep.y[-6:]).all() and not prep.valid[-6:].any()
    np.testing.assert_allclose(prep.bar_var, m, rtol=0, atol=0, equal_nan=True)


def test_zero_variance_label_is_dropped_and_a_constant_price_is_a_clear_error() -> None:
    df = btc4h(400)
    flat = df.copy()
    flat.loc[200:206, ["open", "high", "low", "close"]] = float(df.loc[199, "close"])  # bars 200..206 flat
    prep = prepare(flat, vol_cfg(vol_form="log_var"))  # type: ignore[arg-type]
    assert np.isnan(prep.y[199]) and not prep.valid[199]  # label = bars 200..205: zero variance
    assert prep.valid[150]
    const = df.copy()
    const[["open", "high", "low", "close"]] = 100.0
    with pytest.raises(DataError, match="the price is constant"):
        prepare(const, vol_cfg())  # type: ignore[arg-type]


def test_a_horizon_longer_than_the_data_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"the data has 100 bars but one sample needs at least .*target\.horizon 500"):
        prepare(btc4h(100), vol_cfg(horizon=500))  # type: ignore[arg-type]


# ---------------------------------------------------------------- metrics and Diebold-Mariano


def _pair(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.exp(rng.normal(-9, 0.5, n))
    v = f * rng.chisquare(3, n) / 3  # a noisy, unbiased proxy of f
    return f, v


def test_vol_metrics_against_statsmodels_and_scipy() -> None:
    sm = pytest.importorskip("statsmodels.api")

    f, v = _pair()
    m = vm.vol_metrics(f, v, centre=float(np.mean(v[:100])))
    assert m["qlike"] == pytest.approx(np.mean([b / a - math.log(b / a) - 1 for a, b in zip(f, v, strict=True)]))
    assert m["mse_var"] == pytest.approx(np.mean((f - v) ** 2), rel=1e-12)
    assert m["mse_vol"] == pytest.approx(np.mean((np.sqrt(f) - np.sqrt(v)) ** 2), rel=1e-12)
    ols = sm.OLS(v, sm.add_constant(f)).fit()
    assert m["mz_intercept"] == pytest.approx(ols.params[0], rel=1e-8, abs=1e-15)
    assert m["mz_slope"] == pytest.approx(ols.params[1], rel=1e-8)
    assert m["mz_r2"] == pytest.approx(ols.rsquared, rel=1e-8)
    assert m["rank_ic"] == pytest.approx(stats.spearmanr(f, v)[0], rel=1e-12)
    c = float(np.mean(v[:100]))
    assert m["directional_accuracy"] == pytest.approx(np.mean((f > c) == (v > c)))
    assert "directional_accuracy" not in vm.vol_metrics(f, v)  # no training centre: no look-ahead proxy
    assert vm.vol_metrics(v, v)["qlike"] == 0.0


def test_qlike_refuses_non_positive_forecasts_with_a_count() -> None:
    f, v = _pair(50)
    f[[3, 7]] = [0.0, -1e-6]
    with pytest.raises(DataError, match=r"2 forecast variance\(s\) of 50 are not finite and > 0"):
        vm.vol_metrics(f, v)
    f[[3, 7]] = [1e-5, np.nan]
    with pytest.raises(DataError, match="1 forecast"):
        vm.vol_metrics(f, v)


@pytest.mark.parametrize("lags", [0, 5])
def test_diebold_mariano_matches_a_hac_regression_on_a_constant(lags: int) -> None:
    sm = pytest.importorskip("statsmodels.api")

    f, v = _pair(600, 1)
    g = f * np.exp(np.random.default_rng(2).normal(0, 0.3, 600))
    la, lb = vm.qlike_terms(f, v), vm.qlike_terms(g, v)
    dm = vm.diebold_mariano(la, lb, lags=lags)
    ols = sm.OLS(la - lb, np.ones(600)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
    assert dm["stat"] == pytest.approx(float(ols.tvalues[0]), rel=1e-9)
    assert dm["p"] == pytest.approx(float(ols.pvalues[0]), rel=1e-7)
    assert dm["stat"] < 0  # the true variance f beats the noisy g
    assert vm.newey_west_lags(2000, 6) == 7 and vm.newey_west_lags(100, 12) == 11


# ---------------------------------------------------------------- baselines


@lru_cache(maxsize=1)
def _series() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = btc4h(4000)
    _, var, m = realized.labels(df, 6, "close", "var")
    r = realized.bar_returns(df["close"].to_numpy())
    train = np.arange(200, 3000)
    return m, var, r, train


def test_levels_har_equals_statsmodels_ols_on_the_training_rows_only() -> None:
    sm = pytest.importorskip("statsmodels.api")

    m, var, r, train = _series()
    pred, info = vb.har_levels(m, var, train, "4h")
    assert info["windows_bars"] == [6, 42, 180]
    s = pd.Series(m)
    X = np.column_stack([s.rolling(w).mean() for w in (6, 42, 180)])
    rows = train[np.isfinite(X[train]).all(axis=1)]
    ols = sm.OLS(var[rows], sm.add_constant(X[rows])).fit()
    np.testing.assert_allclose(info["coef"], ols.params, rtol=1e-6)
    raw = ols.predict(sm.add_constant(X[3500:]))
    np.testing.assert_allclose(pred[3500:], np.maximum(raw, info["floor"]), rtol=1e-6)
    # the test rows' labels never enter the fit: changing them changes nothing
    var2 = var.copy()
    var2[3000:] *= 10
    np.testing.assert_array_equal(vb.har_levels(m, var2, train, "4h")[0], pred)


def test_ewma_and_naive_against_plain_loops() -> None:
    m, var, r, train = _series()
    init = float(np.nanmean(m[200:3000]))
    lam = 0.94 ** (1 / 6)
    s, want = init, np.empty(len(m))
    for i, x in enumerate(m):
        s = lam * s + (1 - lam) * (x if np.isfinite(x) else init)
        want[i] = s
    np.testing.assert_allclose(vb.ewma(m, "4h", init), want, rtol=1e-10)
    naive = vb.naive(m, 6)
    assert naive[3100] == pytest.approx(np.mean(m[3095:3101]), rel=1e-10)
    assert np.isnan(naive[5])  # bar 0's return is undefined


def test_garch_forecasts_match_arch_with_the_same_parameters() -> None:
    arch = pytest.importorskip("arch")
    m, var, r, train = _series()
    pred, info = vb.garch_t(r, m, train, 6)
    assert pred is not None and info["converged"] and 0 < info["alpha"] + info["beta"] <= 1
    x = 100 * r[1:]
    am = arch.arch_model(x, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    params = pd.Series({"omega": info["omega"], "alpha[1]": info["alpha"], "beta[1]": info["beta"], "nu": info["nu"]})
    fc = am.fix(params).forecast(horizon=6, start=0, reindex=False)
    ref = fc.variance.to_numpy().mean(axis=1) / 1e4  # row j: forecast made at bar j+1 of r
    # different starting variances are forgotten at the rate beta^t: compare after a burn-in
    np.testing.assert_allclose(pred[2001:], ref[2000:], rtol=1e-6)


def test_fit_baselines_gives_positive_forecasts_for_every_baseline() -> None:
    # (their speed on 100k bars is measured by benchmarks/bench_vol.py, not asserted here)
    m, var, r, train = _series()
    b = vb.fit_baselines(m, var, r, train, 6, "4h", garch=False)
    assert set(b.forecasts) == {"har", "har_levels", "ewma", "ewma_fit", "naive"}
    for f in b.forecasts.values():
        assert (f[3500:] > 0).all()


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("form", ["vol", "log_var", "var"])
def test_qlike_and_nll_losses_equal_the_numpy_definitions(form: str) -> None:
    f, v = _pair(64, 3)
    to = {"vol": np.sqrt, "log_var": np.log, "var": lambda a: a}[form]
    mean, std = float(np.mean(to(v))), float(np.std(to(v)))
    out = torch.tensor((to(f) - mean) / std, dtype=torch.float64)  # raw outputs: forecasts standardized
    y_z = torch.tensor((to(v) - mean) / std, dtype=torch.float64)
    q = make_loss("qlike", mean=mean, std=std, form=form)(out, y_z)
    assert float(q) == pytest.approx(np.mean(vm.qlike_terms(f, v)), rel=1e-9)
    nll = make_loss("nll", mean=mean, std=std, form=form)(out, y_z)
    assert float(nll) == pytest.approx(np.mean(0.5 * (np.log(f) + v / f)), rel=1e-9)
    assert float(nll) == pytest.approx(np.mean(0.5 * (vm.qlike_terms(f, v) + np.log(v) + 1)), rel=1e-9)


def test_positive_output_stays_positive_and_trains() -> None:
    from cryptonorm.learn.models import Forecaster

    fm = Forecaster()
    fm.output = "positive"
    fm.y_mean.fill_(1e-2)
    fm.y_std.fill_(5e-3)
    out = torch.linspace(-50, 50, 101, requires_grad=True)
    val = fm.to_forecast(out)
    assert (val > 0).all()
    assert float(val[-1].detach()) == pytest.approx(50 * 5e-3 + 1e-2, rel=1e-5)  # ~identity far above zero
    loss = make_loss("qlike", fm.to_forecast, 1e-2, 5e-3, "vol")(out, torch.zeros(101))
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()


# ---------------------------------------------------------------- vol_target backtest


def test_vol_target_positions_fees_and_risk_tracking_by_hand() -> None:
    n = 400
    rng = np.random.default_rng(4)
    ts = np.arange(n, dtype=np.int64) * 14_400_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    fvar = np.full(n, 0.01**2)
    fvar[:10] = np.nan  # no forecast: flat
    fvar[200:] = 0.02**2
    cfg = BacktestConfig(target_vol=0.3, max_leverage=1.2, fee_bps=10)
    bt = simulate_vol_target(ts, close, fvar, cfg, "4h", trailing_vol=np.full(n, 0.3))
    vol_ann = math.sqrt(0.01**2 * 2190)  # 0.468
    pos = bt.equity["position"].to_numpy()
    assert pos[0] == 0 and (pos[1:11] == 0).all()
    assert pos[11] == pytest.approx(min(0.3 / vol_ann, 1.2))
    assert pos[250] == pytest.approx(0.3 / math.sqrt(0.02**2 * 2190))
    ret = pos[1:] * (close[1:] / close[:-1] - 1) - np.abs(np.diff(pos)) * 1e-3
    np.testing.assert_allclose(bt.equity["strategy_return"].to_numpy()[1:], ret, rtol=1e-12, atol=1e-15)
    trailing = bt.metrics["baselines"]["trailing_vol"]
    assert trailing["mean_position"] == pytest.approx(1.0)  # 0.3 / 0.3 on every bar held
    w = 180  # 30 days of 4h bars
    r = ret
    vols = [np.std(r[i * w:(i + 1) * w], ddof=1) * math.sqrt(2190) for i in range(len(r) // w)]
    te = risk_tracking(r, 0.3, "4h")
    assert te["risk_tracking_error"] == pytest.approx(math.sqrt(np.mean((np.array(vols) - 0.3) ** 2)), rel=1e-12)
    assert bt.metrics["strategy"]["risk_tracking_error"] == pytest.approx(te["risk_tracking_error"])
    with pytest.raises(DataError, match="negative"):
        simulate_vol_target(ts, close, -fvar, cfg, "4h")


def test_walk_forward_runs_fit_the_baselines_before_the_first_fold() -> None:
    from cryptonorm.pipeline.vol import VolContext

    cfg = build_config({"data": {"timeframe": "4h"}, "features": FEATS,
                        "target": {"kind": "volatility", "horizon": 6, "vol_form": "var"}, "backtest": {}})
    prep = prepare(btc4h(3000), cfg)
    split_of = np.full(3000, "", dtype=object)
    split_of[2000:2990][prep.valid[2000:2990]] = "test"  # walk-forward marks only out-of-sample rows
    forecasts = np.where(split_of == "test", prep.y * 1.1, np.nan)
    ctx = VolContext(prep, forecasts, split_of, cfg)
    assert ctx.train_rows.max() < 2000 - (6 + 8)  # the embargo before the first fold
    # the calmest test labels x 1.1 lie below the training labels' variance floor and are raised to it
    assert ctx.floor is not None and 0 < ctx.floor_hit.sum() <= int((ctx.y_var * 1.1 < ctx.floor).sum())
    idx = np.flatnonzero((split_of == "test") & ~ctx.floor_hit)
    m = ctx.metrics(idx)
    assert m["mz_slope"] == pytest.approx(1 / 1.1, rel=1e-9)  # v = f / 1.1 exactly where no floor binds
    assert set(m["baselines"]) >= {"har", "ewma", "naive"}
