"""Verdicts on a claim: effects with CIs and Holm-corrected p-values per comparison, then a written rule.

Pure functions on a tidy per-cell frame (one row per finished cell: the grid keys as shown strings, `seed`,
and metric columns); nothing here reads or writes files.

A comparison puts the cells whose grid key `key` has the value `treatment` beside those with `control`,
matched on every other grid key and the seed (so each pair differs only in `key`):
  - `paired` (the default): per-pair differences d = treatment - control. Effect: mean(d) relative to the
    control's mean |mean(control)| (or, for a `change` metric that is already relative, mean(d) itself).
    Tests: paired t-test (the rule's test) and Wilcoxon signed-rank (shown beside it). The rule's 95% CI
    is the Student-t interval of the mean difference (it agrees with the t-test; a percentile bootstrap
    over 5 seeds is too narrow to rule on); a seeded percentile-bootstrap CI is reported beside it.
    Every test and interval is evaluate/stats.py's (one home per statistic; tested against scipy/statsmodels).
    `control: null` tests the treatment alone against 0.
  - `spread`: the spread over seeds, unpaired: effect std(treatment) / std(control) - 1; Brown-Forsythe test
    (Levene's test about the median) for equal spread; the CI (rule and report) is a percentile bootstrap
    resampling each group's seeds.
The p-values of a claim's primary comparisons (those that decide the verdict) are Holm-corrected together;
its secondary comparisons (shown for context) form a second family, corrected among themselves.

The rule (all of it in the claim file, fixed before the run): with s = +1 when the claim predicts a higher
metric for the treatment (-1 for lower), e = s * effect and its CI [e_lo, e_hi]:
  - a comparison SUPPORTS the claim when Holm p < alpha and e >= margin (and e > 0);
  - it OPPOSES the claim when Holm p < alpha with e < 0, or when e_hi < margin (the CI rules out an effect
    of the claimed size);
  - `claimed: either` (a difference in any direction): supports when Holm p < alpha and |e| >= margin,
    opposes when the CI lies inside (-margin, margin).
  The claim is SUPPORTED when every primary comparison supports it (`require: all`) or at least one does
  (`require: any`); CONTRADICTED when one opposes it (`all`) or every one does (`any`); else INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from cryptonorm.evaluate.compare import holm_within, match, paired, spread

Claimed = Literal["lower", "higher", "either"]
VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Comparison:
    """One contrast of a claim, as the claim file states it (values as shown strings)."""

    key: str  # the grid key whose values are compared, e.g. model.norm
    treatment: str  # the value the claim is about, e.g. batch
    control: str | None  # the value it is compared with; None: the treatment against 0
    where: dict[str, str] = field(default_factory=dict)  # only cells with these grid values
    role: Literal["primary", "secondary"] = "primary"

    @property
    def label(self) -> str:
        vs = f" vs {self.control}" if self.control is not None else " vs 0"
        where = " ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in self.where.items())
        return f"{self.key.split('.', 1)[-1]}={self.treatment}{vs}{f' [{where}]' if where else ''}"


@dataclass(frozen=True)
class Rule:
    """How the numbers become a verdict (see the module docstring)."""

    metric: str
    claimed: Claimed
    comparisons: tuple[Comparison, ...]
    test: Literal["paired", "spread"] = "paired"
    margin: float = 0.0  # smallest effect that counts, relative (0.02 = 2% of the control's mean)
    alpha: float = 0.05  # on Holm-adjusted p-values
    require: Literal["all", "any"] = "all"
    relative: bool = True  # divide the mean difference by |control mean| (False for already-relative metrics)


@dataclass
class Verdict:
    verdict: str  # supported / contradicted / inconclusive
    reason: str  # one sentence: which comparisons decided it
    table: pd.DataFrame  # one row per comparison (see compare())


# ---------------------------------------------------------------- comparisons


def _filter(df: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for k, v in where.items():
        mask &= df[k] == v
    return df[mask]


def _pairs(df: pd.DataFrame, comp: Comparison, metric: str, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Metric of treatment and control cells matched on every other grid key and the seed."""
    match_on = [k for k in keys if k != comp.key and k not in comp.where]
    return match(_filter(df, comp.where), comp.key, comp.treatment, comp.control, match_on, metric)


def compare(df: pd.DataFrame, rule: Rule, keys: list[str]) -> pd.DataFrame:
    """One row per comparison: n, means, effect and 95% CI, p (t / Brown-Forsythe), p Wilcoxon, p Holm,
    how many pairs point the claimed way, the smallest Wilcoxon p reachable, and whether it supports or
    opposes the claim. `keys`: the grid keys that identify a cell (the seed included)."""
    rows = []
    for comp in rule.comparisons:
        t, c = _pairs(df, comp, rule.metric, keys)
        rows.append(_spread_row(comp, t, c) if rule.test == "spread" else _paired_row(comp, t, c, rule))
    table = pd.DataFrame(rows)
    if len(table):  # two Holm families: the deciding comparisons, and the rest
        table["p_holm"] = holm_within(table["p"].to_numpy("float64"), table["role"].to_numpy())
        judged = [_judge(r, rule) for _, r in table.iterrows()]
        table["supports"] = [j == "supports" for j in judged]
        table["opposes"] = [j == "opposes" for j in judged]
    return table


def _paired_row(comp: Comparison, t: np.ndarray, c: np.ndarray, rule: Rule) -> dict[str, object]:
    r = paired(t, c)
    n, d = r.n, t - c
    scale = abs(r.mean_ref) if (rule.relative and comp.control is not None and n) else 1.0
    scale = scale if scale > 0 else math.nan
    sign = -1.0 if rule.claimed == "lower" else 1.0
    return {"comparison": comp.label, "role": comp.role, "n": n,
            "treatment_mean": r.mean, "control_mean": r.mean_ref if comp.control is not None else math.nan,
            "effect": r.diff / scale if n else math.nan, "ci_low": r.ci_t[0] / scale, "ci_high": r.ci_t[1] / scale,
            "boot_low": r.ci_boot[0] / scale, "boot_high": r.ci_boot[1] / scale,
            "p": r.t.pvalue, "test": "paired t", "p_wilcoxon": r.wilcoxon.pvalue, "min_p_wilcoxon": r.min_p_wilcoxon,
            "claimed_way": int(np.sum(sign * d > 0)) if rule.claimed != "either" else int(np.sum(d != 0)),
            "note": r.note}


def _spread_row(comp: Comparison, t: np.ndarray, c: np.ndarray) -> dict[str, object]:
    # unpaired: each group's values over seeds (the pairing of _pairs is irrelevant to a spread)
    s = spread(t, c)
    lo, hi = s.ci
    return {"comparison": comp.label, "role": comp.role, "n": s.n, "treatment_mean": s.std, "control_mean": s.std_ref,
            "effect": s.effect, "ci_low": lo, "ci_high": hi, "boot_low": lo, "boot_high": hi, "p": s.test.pvalue,
            "test": "Brown-Forsythe",
            "p_wilcoxon": math.nan, "min_p_wilcoxon": math.nan, "claimed_way": math.nan, "note": s.test.note}


def _judge(row: pd.Series, rule: Rule) -> str:
    """'supports', 'opposes' or '' for one comparison row (the rule in the module docstring)."""
    e, lo, hi, p = (float(row[k]) for k in ("effect", "ci_low", "ci_high", "p_holm"))
    sig = math.isfinite(p) and p < rule.alpha
    if rule.claimed == "either":
        if sig and math.isfinite(e) and abs(e) >= rule.margin and e != 0:
            return "supports"
        return "opposes" if math.isfinite(lo) and math.isfinite(hi) and -rule.margin < lo and hi < rule.margin \
            else ""
    s = -1.0 if rule.claimed == "lower" else 1.0
    e, e_hi = s * e, max(s * lo, s * hi)
    if sig and e > 0 and e >= rule.margin:
        return "supports"
    if (sig and e < 0) or (math.isfinite(e_hi) and e_hi < rule.margin):
        return "opposes"
    return ""


def decide(table: pd.DataFrame, rule: Rule) -> Verdict:
    """The claim's verdict from its comparisons table (primary comparisons only decide)."""
    prim = table[table["role"] == "primary"] if len(table) else table
    if not len(prim) or (prim["n"] < 2).all():
        return Verdict("inconclusive", "no primary comparison has two or more finished pairs of cells", table)
    sup, opp = prim["supports"].astype(bool), prim["opposes"].astype(bool)

    def names(mask: pd.Series) -> str:
        return ", ".join(prim.loc[mask, "comparison"])

    if rule.require == "all":
        if sup.all():
            return Verdict("supported", f"every primary comparison supports it ({names(sup)})", table)
        if opp.any():
            return Verdict("contradicted", f"opposed by {names(opp)}", table)
        return Verdict("inconclusive", f"not every primary comparison is significant in the claimed way "
                                       f"(supporting: {names(sup) or 'none'}); none opposes it", table)
    if sup.any():
        return Verdict("supported", f"supported by {names(sup)}", table)
    if opp.all():
        return Verdict("contradicted", f"every primary comparison opposes it ({names(opp)})", table)
    return Verdict("inconclusive", "no primary comparison is significant in the claimed way, and not every one "
                                   "rules the claimed effect out", table)


def relative_change(df: pd.DataFrame, metric: str, key: str, start: str, end: str, keys: list[str]) -> pd.DataFrame:
    """metric(end) / metric(start) - 1 across grid key `key`, matched on every other key and the seed.

    E.g. the degradation of test loss from batch 128 (start) to batch 2 (end) per norm and seed. Returns
    the frame without `key`, one row per match, `metric` replaced by the relative change."""
    match = [k for k in keys if k != key]
    a = df[df[key] == start].set_index(match)[metric].apply(pd.to_numeric, errors="coerce")
    b = df[df[key] == end].set_index(match)[metric].apply(pd.to_numeric, errors="coerce")
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    out = (both["b"] / both["a"] - 1.0).rename(metric).reset_index()
    return out
