"""The study's statistics against independent code: statsmodels (Holm, HAC/OLS, AnovaRM) and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cryptonorm.errors import ConfigError
from cryptonorm.evaluate import compare as cmp
from cryptonorm.evaluate import metrics as sm_metrics
from cryptonorm.evaluate import stats as st

sm = pytest.importorskip("statsmodels.api")
from statsmodels.stats.anova import AnovaRM  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402


def test_holm_matches_statsmodels_and_keeps_nans_out_of_the_family() -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 0.05, 6), rng.uniform(0, 1, 10), [0.0, 1.0, 0.01, 0.01]])
    ours = st.holm(p)
    ref = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    with_nan = np.insert(p, [2, 5], np.nan)
    adj = st.holm(with_nan)
    assert np.isnan(adj[[2, 6]]).all()
    np.testing.assert_allclose(adj[np.isfinite(adj)], ref, rtol=1e-12)  # the NaNs do not enlarge the family
    assert np.isnan(st.holm([np.nan])).all()


@pytest.mark.parametrize("h", [1, 3, 6])
def test_diebold_mariano_variance_is_statsmodels_hac(h: int) -> None:
    """DM before the HLN factor = the t-value of an OLS of d on a constant with Newey-West (Bartlett) errors."""
    rng = np.random.default_rng(h)
    e = rng.normal(size=400)
    d = 0.08 + np.convolve(e, np.ones(h) / h, mode="same")  # overlapping h-step losses are autocorrelated
    T = len(d)
    ols = sm.OLS(d, np.ones(T)).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
    hln = math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    r = st.diebold_mariano(d, horizon=h)
    assert r.statistic == pytest.approx(float(ols.tvalues[0]) * hln, rel=1e-9)
    assert r.pvalue == pytest.approx(2 * stats.t.sf(abs(float(ols.tvalues[0]) * hln), T - 1), rel=1e-9)


@pytest.mark.parametrize("h", [1, 6])
def test_one_diebold_mariano_with_a_method_and_lag_switch(h: int) -> None:
    """evaluate.vol_metrics holds the only DM: "normal" = statsmodels' HAC t-value with a normal p, "hln" =
    the same times the HLN factor with a Student-t p; evaluate.stats is that with lags = horizon - 1."""
    from cryptonorm.evaluate import vol_metrics as vm

    rng = np.random.default_rng(10 + h)
    la = rng.gamma(2.0, size=300)
    lb = la + 0.05 + np.convolve(rng.normal(scale=0.5, size=300), np.ones(h) / h, mode="same")
    T = len(la)
    ols = sm.OLS(la - lb, np.ones(T)).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
    t = float(ols.tvalues[0])
    normal = vm.diebold_mariano(la, lb, h, lags=h - 1, method="normal")
    assert normal["stat"] == pytest.approx(t, rel=1e-9) and normal["p"] == pytest.approx(float(ols.pvalues[0]))
    hln = vm.diebold_mariano(la, lb, h, lags=h - 1, method="hln")
    factor = math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    assert hln["stat"] == pytest.approx(t * factor, rel=1e-9)
    assert hln["p"] == pytest.approx(2 * stats.t.sf(abs(t * factor), T - 1), rel=1e-9)
    study = st.diebold_mariano(la - lb, horizon=h)
    assert (study.statistic, study.pvalue, study.n) == pytest.approx((hln["stat"], hln["p"], T))
    same = vm.diebold_mariano(la, la.copy(), h)
    assert math.isnan(same["stat"]) and same["p"] == 1.0
    with pytest.raises(ValueError, match="method"):
        vm.diebold_mariano(la, lb, method="hac")


def test_dm_per_seed_one_collapsed_seed_cannot_make_a_tiny_p() -> None:
    """Four seeds where the norm is a hair worse and one that collapsed: averaging the errors over seeds
    before one DM gives p < 0.001; per-seed DM combined by a sign test does not."""
    rng = np.random.default_rng(0)
    T = 500
    y = rng.normal(size=T)
    pairs = []
    for seed in range(5):
        ref = y + rng.normal(scale=1.0, size=T)
        cur = y + rng.normal(scale=1.0, size=T)
        if seed == 4:
            cur = y + rng.normal(scale=6.0, size=T)  # collapsed
        pairs.append(((cur - y) ** 2, (ref - y) ** 2))
    averaged = st.diebold_mariano(np.mean([a - b for a, b in pairs], axis=0))
    assert averaged.pvalue < 0.001  # the design the per-seed test replaces
    res = st.dm_per_seed(pairs)
    assert res.n_seeds == 5 and res.n_better + res.n_worse == 5
    assert res.pvalue >= st.min_pvalues(5)["dm_sign"] == pytest.approx(0.0625)
    k = res.n_better  # the sign test by hand: two-sided binomial with p = 1/2
    tail = sum(math.comb(5, i) for i in range(0, min(k, 5 - k) + 1)) / 2**5
    assert res.pvalue == pytest.approx(min(1.0, 2 * tail))
    assert res.per_seed[4].statistic > 5  # the collapsed seed is still visible on its own
    assert np.isnan(st.dm_per_seed([]).pvalue)


def test_min_pvalues_are_what_scipy_reaches_at_the_extreme() -> None:
    for n in (3, 5, 8):
        best = stats.wilcoxon(np.arange(1.0, n + 1), np.zeros(n)).pvalue  # every difference on one side
        assert st.min_pvalues(n)["wilcoxon"] == pytest.approx(best)
        assert st.min_pvalues(n)["dm_sign"] == pytest.approx(stats.binomtest(n, n, 0.5).pvalue)
    assert st.min_pvalues(5)["wilcoxon"] > 0.05  # five seeds can never pass a Wilcoxon at 5%


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap() -> None:
    x = np.array([0.3, -0.1, 0.8, 0.45, 0.2, 0.05, 0.6])
    lo, hi = st.bootstrap_ci(x, n_resamples=20000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(7)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)
    assert lo < x.mean() < hi
    assert st.bootstrap_ci(x, seed=1) == st.bootstrap_ci(x, seed=1)  # seeded: reproducible
    assert all(math.isnan(v) for v in st.bootstrap_ci(np.array([1.0])))


def _cube(seed: int, interaction: float) -> pd.DataFrame:
    """seeds x norms x batch sizes: batch norm degrades at small batches by `interaction`."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(6):
        subject = rng.normal(scale=0.3)
        for norm in ("none", "batch", "layer"):
            for b in (2, 16, 128):
                v = 1.0 + subject + 0.05 * math.log2(128 / b) + rng.normal(scale=0.05)
                if norm == "batch":
                    v += interaction * math.log2(128 / b)
                rows.append({"seed": s, "model.norm": norm, "train.batch_size": b, "test_mse": v, "status": "ok"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("interaction", [0.0, 0.08])
def test_interaction_anova_matches_statsmodels_anovarm(interaction: float) -> None:
    df = _cube(1, interaction)
    plain = df.rename(columns={"model.norm": "norm", "train.batch_size": "batch"})  # patsy-safe names
    ref = AnovaRM(plain, "test_mse", "seed", within=["norm", "batch"]).fit().anova_table
    row = ref.loc["norm:batch"]
    per, inter = cmp.degradation(df, "test_mse", reference="none")
    assert inter.loc[0, "F"] == pytest.approx(row["F Value"], rel=1e-9)
    assert inter.loc[0, "p_interaction"] == pytest.approx(row["Pr > F"], rel=1e-9)
    if interaction:
        assert inter.loc[0, "p_interaction"] < 0.001
    # degradation of batch norm at batch 2 vs 128, paired by seed, is scipy's paired t on those cells
    b2 = df[(df["model.norm"] == "batch") & (df["train.batch_size"] == 2)].sort_values("seed")["test_mse"]
    b128 = df[(df["model.norm"] == "batch") & (df["train.batch_size"] == 128)].sort_values("seed")["test_mse"]
    r = per[(per["model.norm"] == "batch") & (per["train.batch_size"] == 2)].iloc[0]
    assert r["degradation"] == pytest.approx(float(np.mean(b2.to_numpy() - b128.to_numpy())))
    assert r["p_t"] == pytest.approx(stats.ttest_rel(b2, b128).pvalue)
    assert set(per["vs_batch"]) == {128}


def test_interaction_needs_complete_cells() -> None:
    y = np.ones((3, 2, 2))
    y[0, 0, 0] = np.nan
    assert "every seed" in st.interaction_anova(y).note
    assert np.isnan(st.interaction_anova(np.ones((1, 2, 2))).pvalue)


def test_compare_effects_tests_and_holm_against_scipy_and_statsmodels() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for kind in ("mlp", "lstm"):
        for s in range(5):
            base = rng.normal(1.0, 0.1)
            for norm, shift in (("none", 0.0), ("batch", 0.2), ("layer", 0.01)):
                rows.append({"model.kind": kind, "model.norm": norm, "seed": s, "status": "ok",
                             "test_qlike": base + shift + rng.normal(scale=0.02), "test_rank_ic": rng.normal()})
    rows.append({"model.kind": "mlp", "model.norm": "batch", "seed": 9, "status": "failed", "test_qlike": 99.0})
    df = pd.DataFrame(rows)
    out = cmp.compare(df, "qlike", reference="none", by=["model.kind"])
    assert len(out) == 4 and set(out["n_seeds"]) == {5}  # the failed cell is left out
    r = out[(out["model.kind"] == "mlp") & (out["model.norm"] == "batch")].iloc[0]
    sel = df[(df["model.kind"] == "mlp") & (df["status"] == "ok")]
    a = sel[sel["model.norm"] == "batch"].sort_values("seed")["test_qlike"].to_numpy()
    b = sel[sel["model.norm"] == "none"].sort_values("seed")["test_qlike"].to_numpy()
    assert r["effect"] == pytest.approx(np.mean(a - b))
    assert r["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert r["ci_low"] < r["effect"] < r["ci_high"]
    assert r["better"] == "no"  # qlike is a loss: batch is worse
    assert r["min_p_wilcoxon"] == pytest.approx(0.0625)
    allp = np.concatenate([out["p_t"].to_numpy(), out["p_wilcoxon"].to_numpy()])
    ref = multipletests(allp, method="holm")[1]
    np.testing.assert_allclose(np.concatenate([out["p_t_holm"], out["p_wilcoxon_holm"]]), ref)
    ic = cmp.compare(df, "test_rank_ic", reference="none")
    assert len(ic) == 2 and "model.kind" not in ic.columns
    with pytest.raises(KeyError, match="auc"):
        cmp.compare(df, "auc", reference="none")


def test_metric_catalogue_refuses_a_metric_the_target_lacks() -> None:
    sm_metrics.check_metrics(["qlike", "mse_var"], "volatility", "x.yaml")
    with pytest.raises(ConfigError, match="a return target has no metric 'qlike'"):
        sm_metrics.check_metrics(["qlike"], "return", "x.yaml")
    with pytest.raises(ConfigError, match="unknown metric 'sharpe'"):
        sm_metrics.check_metrics(["sharpe"], "return", "x.yaml")


def test_bar_losses_match_their_metrics() -> None:
    rng = np.random.default_rng(2)
    n = 50
    f = pd.DataFrame({"timestamp": np.arange(n), "split": ["test"] * n, "forecast": rng.normal(size=n),
                      "y": rng.normal(size=n), "forecast_var": rng.uniform(0.5, 2, n), "y_var": rng.uniform(0.5, 2, n),
                      "baseline_har": rng.uniform(0.5, 2, n)})
    assert st.bar_loss(f, "mse").mean() == pytest.approx(np.mean((f["forecast"] - f["y"]) ** 2))
    ratio = f["y_var"] / f["forecast_var"]
    assert st.bar_loss(f, "qlike").mean() == pytest.approx(np.mean(ratio - np.log(ratio) - 1))
    ratio_h = f["y_var"] / f["baseline_har"]
    assert st.bar_loss(f, "qlike", "baseline_har").mean() == pytest.approx(np.mean(ratio_h - np.log(ratio_h) - 1))
    with pytest.raises(KeyError):
        st.bar_loss(f, "rank_ic")
    with pytest.raises(KeyError, match="y_var"):
        st.bar_loss(f.drop(columns="y_var"), "qlike")
