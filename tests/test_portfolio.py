"""The portfolio backtest against a bar-by-bar reference loop, and a one-coin universe against today's backtest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptonorm.config import BacktestConfig
from cryptonorm.config.universe import PortfolioConfig
from cryptonorm.errors import ConfigError
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.portfolio import simulate_portfolio

H = 3_600_000
SYMS = ["A/USDT", "B/USDT", "C/USDT", "D/USDT", "E/USDT", "F/USDT", "G/USDT"]


def _universe(t: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = len(SYMS)
    ts = np.arange(t, dtype=np.int64) * H
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, c)), axis=0))
    close[:30, 1] = np.nan  # listed late
    close[80:, 2] = np.nan  # delisted
    close[50:53, 3] = np.nan  # its own outage
    fc = rng.normal(size=(t, c))
    fc[rng.random((t, c)) < 0.1] = np.nan  # no forecast
    fc[10, :4] = 0.5  # ties
    funding = rng.normal(0, 1e-4, (t, c))
    return ts, close, fc, funding


def _reference(close: np.ndarray, fc: np.ndarray, cfg: BacktestConfig, funding: np.ndarray | None) -> list[float]:
    """A plain loop: one bar, one coin at a time; selection by sorting Python lists."""
    p = cfg.portfolio
    assert p is not None
    t_n, c_n = close.shape
    last: list[float | None] = [None] * c_n
    held, prev = [0.0] * c_n, [0.0] * c_n
    target = [0.0] * c_n
    eq, out = 1.0, []
    for t in range(t_n):
        held = list(target)
        ret = 0.0
        for c in range(c_n):
            px = close[t, c]
            r = 0.0
            if math.isfinite(px):
                r = px / last[c] - 1.0 if last[c] is not None else 0.0
                last[c] = px
            rate = (p.fee_bps.get(SYMS[c], cfg.fee_bps) + cfg.slippage_bps) / 1e4
            ret += held[c] * r - abs(held[c] - prev[c]) * rate
            if funding is not None:
                ret -= held[c] * funding[t, c]
        eq *= 1.0 + ret
        out.append(eq)
        prev = held
        if t % p.rebalance == 0:
            elig = [c for c in range(c_n) if math.isfinite(close[t, c]) and math.isfinite(fc[t, c])]
            target = _decide(elig, fc[t], p)
    return out


def _decide(elig: list[int], f: np.ndarray, p: PortfolioConfig) -> list[float]:
    n = len(elig)
    w = [0.0] * len(f)
    if n == 0:
        return w
    m = p.k if p.k is not None else max(1, int(p.quantile * n))
    if p.kind == "long_short":
        m = min(m, n // 2)
    m = min(m, n)
    mean = sum(f[c] for c in elig) / n
    if p.kind == "top_k":
        book = sorted(elig, key=lambda c: (-abs(f[c]), c))[:m]
        longs = [c for c in book if f[c] > 0]
        shorts = [c for c in book if f[c] < 0]
    else:
        longs = sorted(elig, key=lambda c: (-f[c], c))[:m]
        shorts = sorted(elig, key=lambda c: (f[c], c))[:m] if p.kind == "long_short" else []

    def score(c: int) -> float:
        if p.weights == "equal":
            return 1.0
        return abs(f[c]) if p.kind == "top_k" else abs(f[c] - mean)

    sl, ss = sum(score(c) for c in longs), sum(score(c) for c in shorts)
    if p.kind == "long_short" and p.dollar_neutral:
        if sl > 0 and ss > 0:
            for c in longs:
                w[c] += score(c) / sl * p.gross / 2
            for c in shorts:
                w[c] -= score(c) / ss * p.gross / 2
    elif sl + ss > 0:
        for c in longs:
            w[c] += score(c) / (sl + ss) * p.gross
        for c in shorts:
            w[c] -= score(c) / (sl + ss) * p.gross
    return w


@pytest.mark.parametrize("port", [
    {"kind": "long_short"},
    {"kind": "long_short", "weights": "forecast", "dollar_neutral": False, "quantile": 0.3},
    {"kind": "long_short", "k": 2, "weights": "forecast", "gross": 2.0, "rebalance": 3},
    {"kind": "long_only", "k": 2, "rebalance": 4},
    {"kind": "top_k", "k": 3, "weights": "forecast", "fee_bps": {"B/USDT": 25.0}},
])
@pytest.mark.parametrize("with_funding", [False, True])
def test_matches_a_bar_by_bar_reference_loop(port: dict[str, object], with_funding: bool) -> None:
    ts, close, fc, funding = _universe()
    cfg = BacktestConfig(fee_bps=10, slippage_bps=2, portfolio=PortfolioConfig.model_validate(port))
    run = simulate_portfolio(ts, close, fc, cfg, "1h", SYMS, funding=funding if with_funding else None)
    want = _reference(close, fc, cfg, funding if with_funding else None)
    np.testing.assert_allclose(run.equity, want, rtol=1e-12)
    assert run.metrics["strategy"]["total_return"] == pytest.approx(want[-1] - 1.0)
    # nothing is held in a coin before it lists, nor after it is gone (beyond the bar after its last)
    assert (run.weights[:31, 1] == 0).all() and (run.weights[82:, 2] == 0).all()
    # every coin's contribution adds up to the summed returns
    assert sum(run.metrics["per_coin"].values()) == pytest.approx(run.returns.sum())


def test_dollar_neutral_and_gross_cap() -> None:
    ts, close, fc, _ = _universe()
    cfg = BacktestConfig(portfolio=PortfolioConfig(kind="long_short", weights="forecast", gross=1.5))
    w = simulate_portfolio(ts, close, fc, cfg, "1h", SYMS).weights
    live = np.abs(w).sum(axis=1) > 0
    np.testing.assert_allclose(w[live].sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(w[live]).sum(axis=1), 1.5)


@pytest.mark.parametrize("funded", [False, True])
def test_one_coin_universe_is_the_single_coin_backtest(funded: bool) -> None:
    rng = np.random.default_rng(5)
    n = 400
    ts = np.arange(n, dtype=np.int64) * H
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    fc = rng.normal(size=n)
    fc[::17] = np.nan
    fund = rng.normal(0, 1e-4, n) if funded else None
    single = simulate(ts, close, fc, BacktestConfig(fee_bps=7, slippage_bps=1), "1h", "return", funding=fund)
    cfg = BacktestConfig(fee_bps=7, slippage_bps=1, portfolio=PortfolioConfig(kind="top_k", k=1))
    run = simulate_portfolio(ts, close[:, None], fc[:, None], cfg, "1h", ["X/USDT"],
                             funding=None if fund is None else fund[:, None])
    np.testing.assert_allclose(run.equity, single.equity["equity"].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(run.weights[:, 0], single.equity["position"].to_numpy())
    for key in ("sharpe", "total_return", "max_drawdown", "turnover", "fees_paid"):
        assert run.metrics["strategy"][key] == pytest.approx(single.metrics["strategy"][key], rel=1e-9)


def test_k_larger_than_the_coins_trading_is_one_clear_error() -> None:
    ts, close, fc, _ = _universe()
    cfg = BacktestConfig(portfolio=PortfolioConfig(kind="long_short", k=4))
    with pytest.raises(ConfigError, match=r"backtest\.portfolio\.k = 4 but at most 7 coins"):
        simulate_portfolio(ts, close, fc, cfg, "1h", SYMS)
    with pytest.raises(ConfigError, match="Z/USDT"):
        simulate_portfolio(ts, close, fc, BacktestConfig(portfolio=PortfolioConfig(fee_bps={"Z/USDT": 1.0})),
                           "1h", SYMS)
