"""Verdict rules on constructed results (supported / contradicted / inconclusive), and the statistics they
use checked against independent code (statsmodels' Holm, scipy's one-sample t interval)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cryptonorm.claims import verdicts as vd
from cryptonorm.evaluate import stats as st

KEYS = ["model.norm", "seed"]


def frame(values: dict[str, list[float]], shuffle: bool = True) -> pd.DataFrame:
    """A tidy per-cell frame: one row per (norm, seed), rows in random order (pairing must use the seed)."""
    rows = [{"model.norm": norm, "seed": str(i), "m": v} for norm, vals in values.items() for i, v in enumerate(vals)]
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=3).reset_index(drop=True) if shuffle else df


def rule(*comps: vd.Comparison, **kw: object) -> vd.Rule:
    args: dict[str, object] = {"metric": "m", "claimed": "lower", "comparisons": comps, "margin": 0.02}
    args.update(kw)
    return vd.Rule(**args)  # type: ignore[arg-type]


BN = vd.Comparison("model.norm", "batch", "none")
LN = vd.Comparison("model.norm", "layer", "none")


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=int(rng.integers(1, 9)))
        ours = st.holm(p)
        ref = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(ours, ref, rtol=1e-12)
    # NaN (an undefined test) stays NaN and is not counted in the family
    out = st.holm([0.01, math.nan, 0.04])
    np.testing.assert_allclose(out[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert math.isnan(out[1])


def test_t_interval_matches_scipy_and_statsmodels() -> None:
    from statsmodels.stats.weightstats import DescrStatsW

    d = np.array([0.3, -0.1, 0.5, 0.2, 0.4, 0.05])
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    np.testing.assert_allclose(st.t_interval(d), (ci.low, ci.high), rtol=1e-12)
    np.testing.assert_allclose(st.t_interval(d, 0.9), DescrStatsW(d).tconfint_mean(alpha=0.1), rtol=1e-12)
    assert all(math.isnan(v) for v in st.t_interval(np.array([1.0, np.nan])))


def test_verdicts_use_the_shared_statistics() -> None:
    """One home per statistic: verdicts.py has no interval or bootstrap of its own."""
    for name in ("t_interval", "bootstrap_ci", "min_wilcoxon_p", "BOOTSTRAP_RESAMPLES"):
        assert getattr(vd, name, None) in (None, getattr(st, name, None)), name


def test_bootstrap_of_two_samples_agrees_with_scipy() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 2.0, 12), rng.normal(0, 1.0, 15)

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.std(x, ddof=1) / np.std(y, ddof=1)) - 1.0

    ours = st.bootstrap_ci_two(a, b, ratio, n_resamples=4000)
    ref = stats.bootstrap((a, b), ratio, paired=False, vectorized=False, n_resamples=4000, method="percentile",
                          random_state=np.random.default_rng(1)).confidence_interval
    width = ref.high - ref.low
    assert ours[0] == pytest.approx(ref.low, abs=0.1 * width) and ours[1] == pytest.approx(ref.high, abs=0.1 * width)
    assert all(math.isnan(v) for v in st.bootstrap_ci_two(a[:1], b, ratio))


def test_brown_forsythe_is_an_anova_on_deviations_from_the_median() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 3.0, 10), rng.normal(0, 1.0, 10)
    ref = stats.f_oneway(np.abs(a - np.median(a)), np.abs(b - np.median(b)))
    r = st.brown_forsythe(a, b)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-10) and r.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert math.isnan(st.brown_forsythe(np.ones(4), np.ones(4)).pvalue)


def test_supported_when_every_seed_improves_by_more_than_the_margin() -> None:
    rng = np.random.default_rng(1)
    none = 1.0 + rng.normal(0, 0.01, 6)
    batch = none * 0.9 + rng.normal(0, 0.002, 6)  # ~10% lower in every seed
    r = rule(BN)
    table = vd.compare(frame({"none": list(none), "batch": list(batch)}), r, KEYS)
    v = vd.decide(table, r)
    assert v.verdict == "supported", v.reason
    row = table.iloc[0]
    assert row["n"] == 6 and row["claimed_way"] == 6
    assert row["effect"] == pytest.approx(float(np.mean(batch - none)) / abs(none.mean()))
    # the rule's p is scipy's paired t-test, Holm over the family (one comparison: unchanged)
    assert row["p"] == pytest.approx(stats.ttest_rel(batch, none).pvalue)
    assert row["p_holm"] == pytest.approx(row["p"])
    assert row["min_p_wilcoxon"] == pytest.approx(2 / 2**6)


def test_pairs_are_matched_by_seed_not_by_row_order() -> None:
    none = [1.0, 2.0, 3.0, 4.0, 5.0]
    batch = [0.95, 1.9, 2.85, 3.8, 4.75]  # 5% lower than its own seed, but not than a shuffled one
    table = vd.compare(frame({"none": none, "batch": batch}), rule(BN), KEYS)
    assert table.iloc[0]["claimed_way"] == 5
    assert table.iloc[0]["p"] == pytest.approx(stats.ttest_rel(batch, none).pvalue)


def test_contradicted_when_significantly_the_other_way() -> None:
    rng = np.random.default_rng(2)
    none = 1.0 + rng.normal(0, 0.01, 6)
    batch = none * 1.1 + rng.normal(0, 0.002, 6)
    r = rule(BN)
    v = vd.decide(vd.compare(frame({"none": list(none), "batch": list(batch)}), r, KEYS), r)
    assert v.verdict == "contradicted"
    assert bool(v.table.iloc[0]["opposes"])


def test_contradicted_when_the_ci_rules_out_the_claimed_size() -> None:
    # a tiny, precisely measured gain (0.1%) against a claimed 5%: not significant enough to matter
    none = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02])
    batch = none * (1 - 0.001) + np.array([1e-5, -1e-5, 2e-5, -2e-5, 0, 1e-5])
    r = rule(BN, margin=0.05)
    v = vd.decide(vd.compare(frame({"none": list(none), "batch": list(batch)}), r, KEYS), r)
    assert v.verdict == "contradicted", v.reason
    assert v.table.iloc[0]["ci_high"] < 0.05


def test_inconclusive_when_noisy() -> None:
    none = [1.0, 1.3, 0.8, 1.1, 0.9]
    batch = [0.9, 1.4, 0.7, 1.3, 0.8]  # mixed signs, wide CI covering both 0 and the margin
    r = rule(BN)
    v = vd.decide(vd.compare(frame({"none": none, "batch": batch}), r, KEYS), r)
    assert v.verdict == "inconclusive"
    row = v.table.iloc[0]
    assert row["ci_low"] < -0.02 < 0 < row["ci_high"]


def test_require_all_vs_any_and_secondary_does_not_decide() -> None:
    rng = np.random.default_rng(4)
    none = 1.0 + rng.normal(0, 0.01, 6)
    values = {"none": list(none), "batch": list(none * 0.9 + rng.normal(0, 0.001, 6)),
              "layer": list(none + rng.normal(0, 0.05, 6))}
    df = frame(values)
    both = vd.compare(df, rule(BN, LN), KEYS)
    assert vd.decide(both, rule(BN, LN)).verdict == "inconclusive"
    # the primary comparisons are one Holm family
    np.testing.assert_allclose(both["p_holm"], multipletests(both["p"], method="holm")[1])
    r_any = rule(BN, LN, require="any")
    assert vd.decide(vd.compare(df, r_any, KEYS), r_any).verdict == "supported"
    second = vd.Comparison("model.norm", "layer", "none", role="secondary")
    r2 = rule(BN, second)
    table = vd.compare(df, r2, KEYS)
    assert vd.decide(table, r2).verdict == "supported"
    # a secondary comparison is its own family: it neither decides nor dilutes the primary one
    np.testing.assert_allclose(table["p_holm"], table["p"])


def test_either_direction() -> None:
    none = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02])
    worse = none * 1.08 + np.array([1e-3, -1e-3, 2e-3, 0, -2e-3, 1e-3])
    same = none * (1 + np.array([1e-4, -1e-4, 2e-4, -2e-4, 0, 1e-4]))
    r = rule(BN, claimed="either")
    assert vd.decide(vd.compare(frame({"none": list(none), "batch": list(worse)}), r, KEYS), r).verdict == "supported"
    assert vd.decide(vd.compare(frame({"none": list(none), "batch": list(same)}), r, KEYS), r).verdict == "contradicted"


def test_spread_rule() -> None:
    rng = np.random.default_rng(5)
    none = 1.0 + rng.normal(0, 0.10, 12)
    batch = 1.0 + rng.normal(0, 0.005, 12)
    r = rule(BN, test="spread", margin=0.1)
    table = vd.compare(frame({"none": list(none), "batch": list(batch)}), r, KEYS)
    row = table.iloc[0]
    assert row["p"] == pytest.approx(stats.levene(batch, none, center="median").pvalue)
    assert row["effect"] == pytest.approx(np.std(batch, ddof=1) / np.std(none, ddof=1) - 1)
    assert vd.decide(table, r).verdict == "supported"
    r_up = rule(BN, test="spread", margin=0.1, claimed="higher")
    assert vd.decide(vd.compare(frame({"none": list(none), "batch": list(batch)}), r_up, KEYS), r_up).verdict \
        == "contradicted"


def test_relative_change_and_the_small_batch_interaction() -> None:
    """Claim 6's shape: BatchNorm's loss rises from batch 128 to 2 in every seed, LayerNorm's does not."""
    rng = np.random.default_rng(6)
    rows = []
    for seed in range(6):
        for norm, rise in (("batch", 0.10), ("layer", 0.0)):
            big = 1.0 + rng.normal(0, 0.02)
            rows.append({"model.norm": norm, "train.batch_size": "128", "seed": str(seed), "m": big})
            rows.append({"model.norm": norm, "train.batch_size": "2", "seed": str(seed),
                         "m": big * (1 + rise + rng.normal(0, 0.005))})
    df = pd.DataFrame(rows)
    keys = ["model.norm", "train.batch_size", "seed"]
    ch = vd.relative_change(df, "m", "train.batch_size", "128", "2", keys)
    assert set(ch.columns) == {"model.norm", "seed", "m"} and len(ch) == 12
    one = df[(df["model.norm"] == "batch") & (df["seed"] == "0")].set_index("train.batch_size")["m"]
    got = ch[(ch["model.norm"] == "batch") & (ch["seed"] == "0")]["m"].iloc[0]
    assert got == pytest.approx(one["2"] / one["128"] - 1)
    comps = (vd.Comparison("model.norm", "batch", None), vd.Comparison("model.norm", "batch", "layer"))
    r = vd.Rule("m", "higher", comps, margin=0.02, relative=False)
    table = vd.compare(ch, r, ["model.norm", "seed"])
    assert table.iloc[0]["effect"] == pytest.approx(ch[ch["model.norm"] == "batch"]["m"].mean())
    assert table.iloc[0]["p"] == pytest.approx(stats.ttest_1samp(ch[ch["model.norm"] == "batch"]["m"], 0).pvalue)
    assert vd.decide(table, r).verdict == "supported"
    # and LayerNorm, which holds, contradicts the same claim made about it
    r_ln = vd.Rule("m", "higher", (vd.Comparison("model.norm", "layer", None),), margin=0.02, relative=False)
    assert vd.decide(vd.compare(ch, r_ln, ["model.norm", "seed"]), r_ln).verdict == "contradicted"


def test_too_few_pairs_is_inconclusive() -> None:
    r = rule(BN)
    v = vd.decide(vd.compare(frame({"none": [1.0], "batch": [0.5]}), r, KEYS), r)
    assert v.verdict == "inconclusive"
    assert "two or more" in v.reason
