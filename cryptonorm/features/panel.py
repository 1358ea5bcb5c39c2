"""Samples of a universe: every coin's features and labels on one time grid, cross-sectional transforms,
universe features and cross-sectional targets.

Each coin is prepared alone exactly as one market is (`dataset.prepare_unchecked`: today's indicators, its
own warm-up, its own gaps), then placed on the universe grid. So a coin joins the cross-section at its
first bar plus the warm-up and leaves at its last bar; at time t only coins trading at t take part.

A sample is (t, c): coin c's window ending at row t. Arrays:
    features   (T, C, F) float32, NaN where coin c has no usable row at t (no bar, warm-up, ...)
    y          (T, C) label: target.kind return | excess_return | rank | volatility | direction (per coin)
    outcome    (T, C) log(close[t+h] / close[t]) of coin c
    valid      (T, C) bool: (t, c) can be a sample; for a cross-sectional target, also >= 3 coins at t
Windows are never copied: a batch gathers features[t-w+1 .. t, c] from end rows on demand.

features.cross_section (none | zscore | rank) transforms each row t across the coins that have every
feature at t (`usable`: trading, past their warm-up); features.universe_features adds the cross-sectional
mean of the last bar's log return and its dispersion (the same for every coin at t).
Everything at row t reads rows <= t of any coin (features) or rows <= t + h (labels): the panel
audit (`audit_panel`) checks it by cutting every coin's future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryptonorm.config import Config
from cryptonorm.config.universe import MIN_CROSS_SECTION, UNIVERSE_TARGETS
from cryptonorm.data.universe import Universe, need_cross_section
from cryptonorm.errors import DataError
from cryptonorm.features import cross_section as cs
from cryptonorm.features.dataset import min_bars, prepare_unchecked


@dataclass(eq=False)
class PanelPrepared:
    """Raw (unscaled) features, labels and validity of every (time, coin)."""

    symbols: list[str]  # (C,)
    timestamps: np.ndarray  # (T,) int64 ms
    close: np.ndarray  # (T, C) float64, NaN where no bar
    features: np.ndarray  # (T, C, F) float32
    feature_names: list[str]  # (F,)
    y: np.ndarray  # (T, C) float64
    outcome: np.ndarray  # (T, C) float64
    valid: np.ndarray  # (T, C) bool
    inputs_valid: np.ndarray  # (T, C) bool: the window ending at (t, c) is usable (label or not)
    usable: np.ndarray  # (T, C) bool: row t of coin c has every feature (what the cross-section and scaler see)
    window: int
    horizon: int
    kind: str
    skipped: dict[str, str]  # symbol -> why it holds no sample (too few bars)


def per_coin_config(cfg: Config) -> Config:
    """The config one coin is prepared with: a cross-sectional target reads the coin's forward return."""
    if cfg.target.kind not in UNIVERSE_TARGETS:
        return cfg
    return cfg.model_copy(update={"target": cfg.target.model_copy(update={"kind": "return"})})


def prepare_panel(u: Universe, cfg: Config) -> PanelPrepared:
    """Features, labels and validity of every coin at every time of the universe (rules in the docstring)."""
    kind = cfg.target.kind
    if kind in UNIVERSE_TARGETS:
        need_cross_section(len(u.symbols), "target.kind")
    if cfg.features.cross_section != "none":
        need_cross_section(len(u.symbols), "features.cross_section")
    one = per_coin_config(cfg)
    t_n, c_n = u.rows.shape
    need = min_bars(cfg)
    feats: np.ndarray | None = None
    names: list[str] = []
    y = np.full((t_n, c_n), np.nan)
    outcome = np.full((t_n, c_n), np.nan)
    valid = np.zeros((t_n, c_n), dtype=bool)
    inputs_valid = np.zeros((t_n, c_n), dtype=bool)
    skipped: dict[str, str] = {}
    for c, sym in enumerate(u.symbols):
        candles = u.candles[sym]
        if len(candles) < need:
            skipped[sym] = f"{len(candles)} bars, one sample needs {need}"
            continue
        funding = u.funding.get(sym)
        prep = prepare_unchecked(candles, one, funding)
        at = u.rows[:, c] >= 0
        src = u.rows[at, c]
        if feats is None:
            names = list(prep.feature_names)
            feats = np.full((t_n, c_n, len(names)), np.nan, dtype=np.float32)
        feats[at, c, :] = prep.features[src]
        y[at, c], outcome[at, c] = prep.y[src], prep.outcome[src]
        valid[at, c], inputs_valid[at, c] = prep.valid[src], prep.inputs_valid[src]
    if feats is None:
        raise DataError(f"no coin of data.universe has enough bars for one sample ({need}); use more data or lower "
                        "features.window / target.horizon")
    usable = np.isfinite(feats).all(axis=2)  # (T, C) the coin's row has every feature (past its warm-up)
    feats[~usable] = np.nan
    close = u.on_grid("close")
    if cfg.features.cross_section != "none":
        for j in range(feats.shape[2]):  # one (T, C) slice at a time: no (T, C, F) float64 temporaries
            feats[:, :, j] = cs.transform(feats[:, :, j].astype(np.float64), cfg.features.cross_section, usable)
    if cfg.features.universe_features:
        r1 = np.full((t_n, c_n), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            r1[1:] = np.log(close[1:] / close[:-1])  # NaN unless the coin has both bars
        uf = cs.universe_features(r1).astype(np.float32)  # (T, 2)
        extra = np.broadcast_to(uf[:, None, :], (t_n, c_n, 2))
        feats = np.concatenate([feats, np.where(usable[..., None], extra, np.float32(np.nan))], axis=2)
        names = names + list(cs.UNIVERSE_FEATURES)
    if kind in UNIVERSE_TARGETS:
        y = cs.target(outcome, kind, valid)
        enough = valid.sum(axis=1) >= MIN_CROSS_SECTION
        valid &= enough[:, None] & np.isfinite(y)
    return PanelPrepared(symbols=list(u.symbols), timestamps=u.timestamps, close=close, features=feats,
                         feature_names=names, y=y, outcome=outcome, valid=valid, inputs_valid=inputs_valid,
                         usable=usable,
                         window=cfg.features.window, horizon=cfg.target.horizon, kind=kind, skipped=skipped)
