"""The look-ahead audit: features, scaled inputs and labels must not change when the future is cut off."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryptonorm.config import Config
from cryptonorm.data.universe import Universe
from cryptonorm.errors import DataError
from cryptonorm.features.dataset import Prepared, min_bars, prepare, prepare_unchecked
from cryptonorm.features.splits import split
from cryptonorm.timeframes import format_ms, timeframe_ms

# ---------------------------------------------------------------- look-ahead audit


@dataclass(frozen=True)
class Leak:
    """A column whose past values change when the future is cut off."""

    name: str  # feature name, "scaled:<feature>", "label", "outcome" or "valid"
    first: int  # ms: the earliest bar whose value changed
    cut: int  # ms: the last bar kept in the truncated data that revealed it
    max_abs_diff: float  # largest change seen (inf when a NaN appeared or vanished)


@dataclass
class AuditReport:
    """Result of `audit`: `leaks` is empty when nothing peeks."""

    leaks: list[Leak]
    cuts: list[int]  # ms of the last bar kept, per cut point
    checked: str  # what was compared, in words

    @property
    def ok(self) -> bool:
        return not self.leaks

    @property
    def names(self) -> list[str]:
        return [leak.name for leak in self.leaks]

    def lines(self) -> list[str]:
        if self.ok:
            return [f"no look-ahead: {self.checked}"]
        return [f"{leak.name}: changes at {format_ms(leak.first)} when the data ends at {format_ms(leak.cut)} "
                f"(max abs diff {leak.max_abs_diff:.3g})" for leak in self.leaks]


def _diff_rows(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, float]:
    """Rows where a and b differ (NaN equals NaN) and the largest difference."""
    with np.errstate(invalid="ignore"):
        same = (np.abs(a - b) <= atol + rtol * np.abs(b)) | (np.isnan(a) & np.isnan(b))
    bad = np.flatnonzero(~same)
    if not len(bad):
        return bad, 0.0
    d = np.abs(a[bad] - b[bad])
    return bad, float(np.nanmax(d)) if np.isfinite(d).any() else math.inf


def _cut_points(full: Prepared, ts_c: np.ndarray, cfg: Config, n_points: int,
                points: Sequence[int] | None) -> list[int]:
    """The rows after which the audit cuts the data: `points`, or `n_points` evenly spaced from late enough
    that the truncated data still has samples whose label span ends inside it, to the end."""
    n = len(ts_c)
    if points is not None:
        cuts = sorted({int(p) for p in points})
        bad = [p for p in cuts if not 0 <= p < n]
        if bad:
            raise DataError(f"audit points {bad} are not rows of the data (0 .. {n - 1})")
        return cuts
    first_valid_ts = int(full.timestamps[np.argmax(full.valid)])
    lo = max(int(np.searchsorted(ts_c, first_valid_ts)) + full.horizon + 1, min_bars(cfg) - 1)
    hi = n - 2
    if hi < lo:
        raise DataError(f"too few bars ({n}) to audit; use more data")
    return sorted({int(round(x)) for x in np.linspace(lo, hi, max(1, n_points))})


def audit(candles: pd.DataFrame, cfg: Config, n_points: int = 5, *, points: Sequence[int] | None = None,
          rtol: float = 1e-9, atol: float = 1e-12, funding: pd.DataFrame | None = None) -> AuditReport:
    """Look-ahead audit: cut the data after several bars t, recompute everything, compare with the
    full-data values at rows <= t.

    Compared: every raw feature, the scaled inputs (the scaler fitted on the full data's training split,
    applied to the truncated data), and at rows whose label span ends <= t, the label, the outcome and
    the validity. A swap's `funding` rates are cut at the same time: those with a funding time up to the
    close of the last kept bar stay (a rate is known from its funding time on). `points` are row positions
    in `candles` (the last row kept); by default `n_points` evenly spaced between the first valid sample and
    the end.
    """
    full = prepare(candles, cfg, funding)
    step = timeframe_ms(cfg.data.timeframe)
    ds = split(full, cfg)
    ts_c = candles["timestamp"].to_numpy(dtype="int64")
    h = full.horizon
    cuts = _cut_points(full, ts_c, cfg, n_points, points)
    found: dict[str, Leak] = {}

    def note(name: str, rows: np.ndarray, diff: float, cut_ts: int) -> None:
        if not len(rows):
            return
        first = int(full.timestamps[rows[0]])
        old = found.get(name)
        if old is None or first < old.first:
            found[name] = Leak(name, first, cut_ts, max(diff, old.max_abs_diff if old else 0.0))
        elif diff > old.max_abs_diff:
            found[name] = Leak(old.name, old.first, old.cut, diff)

    for c in cuts:
        cut_ts = int(ts_c[c])
        known = None if funding is None else funding[funding["timestamp"] <= cut_ts + step]
        part = prepare_unchecked(candles.iloc[:c + 1], cfg, known)
        m = len(part.timestamps)
        if not np.array_equal(part.timestamps, full.timestamps[:m]):
            raise AssertionError("truncated rows do not align with the full data")  # a bug, not user error
        raw_bad = set()
        for j, name in enumerate(full.feature_names):
            rows, d = _diff_rows(part.features[:, j], full.features[:m, j], rtol, atol)
            note(name, rows, d, cut_ts)
            if len(rows):
                raw_bad.add(name)
        xs = ds.scaler.transform(part.features, fill_nan=0.0)
        for j, name in enumerate(full.feature_names):
            if name not in raw_bad:
                rows, d = _diff_rows(xs[:, j].astype("float64"), ds.X[:m, j].astype("float64"), rtol, atol)
                note(f"scaled:{name}", rows, d, cut_ts)
        k = max(0, m - h)  # rows r with r + h <= m - 1: their label span ends inside the kept data
        for name, a, b in (("label", part.y[:k], full.y[:k]), ("outcome", part.outcome[:k], full.outcome[:k]),
                           ("valid", part.valid[:k].astype("float64"), full.valid[:k].astype("float64"))):
            rows, d = _diff_rows(a, b, rtol, atol)
            note(name, rows, d, cut_ts)
    leaks = sorted(found.values(), key=lambda leak: (leak.first, leak.name))
    checked = (f"{len(cuts)} cut points, {len(full.feature_names)} features raw and scaled, label, outcome "
               "and validity")
    return AuditReport(leaks=leaks, cuts=[int(ts_c[c]) for c in cuts], checked=checked)


# ---------------------------------------------------------------- a universe: no coin reads another's future


def audit_panel(u: Universe, cfg: Config, n_points: int = 4, *, rtol: float = 1e-6,
                atol: float = 1e-9) -> AuditReport:
    """Cut EVERY coin's data after several times t, prepare the universe again, and compare with the full
    universe: each coin's features (cross-sectional transforms and universe features included) at rows <= t,
    and its label, outcome and validity at rows whose label span ends <= t. A feature or a cross-sectional
    label that read another coin's future would change. (float32 features: rtol 1e-6.)"""
    from cryptonorm.data.universe import align
    from cryptonorm.features.panel import prepare_panel

    full = prepare_panel(u, cfg)
    h = full.horizon
    first = int(np.argmax(full.valid.any(axis=1))) if full.valid.any() else 0
    lo, hi = first + h + 1, len(u.timestamps) - 2
    if hi < lo:
        raise DataError(f"too few bars ({len(u.timestamps)}) to audit the universe; use more data")
    cuts = sorted({int(round(x)) for x in np.linspace(lo, hi, max(1, n_points))})
    found: dict[str, Leak] = {}
    for cut in cuts:
        cut_ts = int(u.timestamps[cut])
        kept = {s: df[df["timestamp"] <= cut_ts].reset_index(drop=True) for s, df in u.candles.items()}
        syms = [s for s in u.symbols if len(kept[s])]
        ts, rows = align({s: kept[s] for s in syms}, syms, u.timeframe)
        part_u = Universe(symbols=syms, timeframe=u.timeframe, candles={s: kept[s] for s in syms},
                          funding={s: f[f["timestamp"] <= cut_ts + timeframe_ms(u.timeframe)]
                                   for s, f in u.funding.items() if s in syms},
                          timestamps=ts, rows=rows)
        part = prepare_panel(part_u, cfg)
        m = len(ts)
        if not np.array_equal(ts, full.timestamps[:m]):
            raise AssertionError("truncated universe does not align with the full one")  # a bug, not user error
        k = max(0, m - h)
        for c_part, sym in enumerate(syms):
            c = u.symbols.index(sym)
            checks = [(name, part.features[:, c_part, j].astype("float64"), full.features[:m, c, j].astype("float64"))
                      for j, name in enumerate(full.feature_names)]
            checks += [("label", part.y[:k, c_part], full.y[:k, c]),
                       ("outcome", part.outcome[:k, c_part], full.outcome[:k, c]),
                       ("valid", part.valid[:k, c_part].astype("float64"), full.valid[:k, c].astype("float64"))]
            for name, a, b in checks:
                bad, d = _diff_rows(a, b, rtol, atol)
                if len(bad):
                    key = f"{sym}:{name}"
                    t0 = int(full.timestamps[bad[0]])
                    if key not in found or t0 < found[key].first:
                        found[key] = Leak(key, t0, cut_ts, d)
    leaks = sorted(found.values(), key=lambda leak: (leak.first, leak.name))
    checked = (f"{len(cuts)} cut points of every coin's future, {len(u.symbols)} coins x {len(full.feature_names)} "
               f"features, label, outcome and validity ({cfg.features.cross_section} cross-section, target "
               f"{cfg.target.kind})")
    return AuditReport(leaks=leaks, cuts=[int(u.timestamps[c]) for c in cuts], checked=checked)
