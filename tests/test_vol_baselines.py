"""The volatility baselines added for issue 26 against independent code: log-HAR = statsmodels OLS on the
same regressors with the log-normal correction, the fitted EWMA = a plain loop at a QLIKE-minimal lambda,
and the strongest baseline = the argmin of QLIKE computed here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptonorm.data.importers import read_user_file
from cryptonorm.evaluate import vol_baselines as vb
from cryptonorm.features import realized

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BTC_USDT-4h.csv.gz"


@lru_cache(maxsize=1)
def _series() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"real data {DATA} not present")
    df = read_user_file(DATA, "4h").iloc[-4000:].reset_index(drop=True)
    _, var, m = realized.labels(df, 6, "close", "var")
    return m, var, np.arange(200, 3000)


def _qlike(f: np.ndarray, v: np.ndarray) -> float:
    ratio = v / f
    return float(np.mean(ratio - np.log(ratio) - 1))


def test_log_har_equals_statsmodels_ols_with_the_lognormal_correction() -> None:
    sm = pytest.importorskip("statsmodels.api")
    m, var, train = _series()
    pred, info = vb.har(m, var, train, "4h")
    s = pd.Series(m)
    X = np.column_stack([s.rolling(w).mean() for w in (6, 42, 180)])  # daily, weekly, monthly on 4h bars
    rows = train[np.isfinite(X[train]).all(axis=1) & (var[train] > 0)]
    assert (X[rows] > 0).all()  # no floor needed on these rows: the regressors are exactly log(X)
    ols = sm.OLS(np.log(var[rows]), sm.add_constant(np.log(X[rows]))).fit()
    np.testing.assert_allclose(info["coef"], ols.params, rtol=1e-10, atol=1e-10)
    assert info["resid_var"] == pytest.approx(float(ols.scale), rel=1e-10)
    want = np.exp(ols.predict(sm.add_constant(np.log(X[3500:]))) + 0.5 * ols.scale)
    np.testing.assert_allclose(pred[3500:], want, rtol=1e-10)
    # the bias correction matters: without it the forecast's mean falls short of the labels' on training rows
    assert np.mean(pred[rows]) > np.mean(np.exp(ols.fittedvalues))
    # labels after the training rows never enter the fit
    var2 = var.copy()
    var2[3000:] *= 10
    np.testing.assert_array_equal(vb.har(m, var2, train, "4h")[0], pred)


def test_fitted_ewma_is_a_plain_loop_at_the_qlike_minimal_lambda() -> None:
    m, var, train = _series()
    init = float(np.nanmean(m[200:3000]))
    pred, info = vb.ewma_fit(m, var, train, init)
    lam = info["lambda_bar"]
    s, want = init, np.empty(len(m))
    for i, x in enumerate(m):
        s = lam * s + (1 - lam) * (x if np.isfinite(x) else init)
        want[i] = s
    np.testing.assert_allclose(pred, want, rtol=1e-10)
    ok = train[np.isfinite(var[train]) & (var[train] > 0)]
    # no lambda on a fine grid does better on the training rows (a loop per lambda, independent of lfilter)
    grid = np.linspace(0.5, 0.9999, 400)
    best_grid = min(_qlike(_loop(m, g, init)[ok], var[ok]) for g in grid)
    assert info["train_qlike"] == pytest.approx(_qlike(want[ok], var[ok]), rel=1e-10)
    assert info["train_qlike"] <= best_grid + 1e-9
    # and the test rows never enter the choice
    var2 = var.copy()
    var2[3000:] *= 10
    assert vb.ewma_fit(m, var2, train, init)[1]["lambda_bar"] == lam


def _loop(m: np.ndarray, lam: float, init: float) -> np.ndarray:
    out, s = np.empty(len(m)), init
    for i, x in enumerate(m):
        s = lam * s + (1 - lam) * (x if np.isfinite(x) else init)
        out[i] = s
    return out


def test_strongest_baseline_is_the_argmin_of_qlike_among_complete_forecasts() -> None:
    m, var, train = _series()
    b = vb.fit_baselines(m, var, np.zeros(len(m)), train, 6, "4h", garch=False)
    rows = np.arange(3000, 3900)
    rows = rows[np.isfinite(var[rows]) & (var[rows] > 0)]
    scores = {name: _qlike(f[rows], var[rows]) for name, f in b.forecasts.items()}
    name, score = vb.strongest(b.forecasts, var, rows) or ("", 0.0)
    assert name == min(scores, key=scores.__getitem__)
    assert score == pytest.approx(scores[name], rel=1e-12)
    # a baseline without a forecast on some of the rows is not a candidate, however good elsewhere
    holed = dict(b.forecasts)
    holed[name] = holed[name].copy()
    holed[name][rows[0]] = np.nan
    assert (vb.strongest(holed, var, rows) or ("",))[0] != name
    assert vb.strongest({}, var, rows) is None


def test_log_har_floors_a_flat_day_at_the_smallest_positive_training_average() -> None:
    m, var, train = _series()
    flat = m.copy()
    flat[3400:3420] = 0.0  # more than a day of unchanged closes (6 bars at 4h): RV_d = 0 there
    pred, info = vb.har(flat, var, train, "4h")
    assert np.isfinite(pred[3400:3500]).all() and (pred[3400:3500] > 0).all()
    s = pd.Series(flat)
    rv_d = s.rolling(6).mean().to_numpy()
    zero = np.flatnonzero(rv_d[3400:3500] == 0) + 3400
    rv_train = rv_d[train][np.isfinite(var[train]) & (var[train] > 0)]
    assert len(zero) and info["floor"][0] == pytest.approx(np.min(rv_train[rv_train > 0]), rel=1e-12)
    # at a zero average the forecast is the one of the floored regressor
    X = np.column_stack([s.rolling(w).mean().to_numpy() for w in (6, 42, 180)])
    t = zero[0]
    z = np.log(np.where(X[t] > 0, X[t], info["floor"]))
    b = info["coef"]
    assert pred[t] == pytest.approx(np.exp(b[0] + z @ np.array(b[1:]) + 0.5 * info["resid_var"]), rel=1e-10)
