"""The compiled backtest engine (trade/kernels.py, numba) against the numpy reference on many configurations:
every metric within 1e-9 relative (counts exactly), the equity and trades frames likewise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryptonorm.config import BacktestConfig
from cryptonorm.trade.backtest import Backtest, simulate

pytest.importorskip("numba")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HOUR = 3_600_000
CURVES = ("strategy", "strategy_before_costs", "buy_and_hold", "last_sign")  # the kernels scale their equity


def _close(a: Any, b: Any, path: str, loose: bool) -> list[str]:
    """Paths where a (compiled) and b (numpy) differ by more than 1e-9 relative."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        return [p for k in a for p in _close(a[k], b[k], f"{path}.{k}", loose or (k in CURVES and _wiped(b[k])))]
    if isinstance(a, list):
        assert len(a) == len(b), path
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _close(x, y, f"{path}[{i}]", loose)]
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(abs(a), abs(b)):
            return []
        # a wiped-out curve: numpy's subnormal equity lost bits, the kernel's scaled one did not (kernels.py)
        return [] if loose and path.rsplit(".", 1)[-1] in ("cagr", "calmar", "total_return") else [path]
    return [] if a == b and type(a) is type(b) else [path]


def _wiped(m: Any) -> bool:
    return isinstance(m, dict) and m.get("total_return", 0.0) + 1.0 < 1e-280


def _both(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> tuple[Backtest, Backtest]:
    monkeypatch.setenv("CRYPTONORM_NUMBA", "1")
    fast = simulate(*args, **kw)
    monkeypatch.setenv("CRYPTONORM_NUMBA", "0")
    return fast, simulate(*args, **kw)


def _check(fast: Backtest, ref: Backtest) -> None:
    assert _close(fast.metrics, ref.metrics, "", False) == []
    # below the smallest normal float (2.2e-308) numpy's cumprod loses bits at every bar; the kernel's scaled
    # equity does not, so there the two agree to 1e-300 absolute, elsewhere to 1e-9 relative
    pd.testing.assert_frame_equal(fast.equity, ref.equity, rtol=1e-9, atol=1e-300)
    pd.testing.assert_frame_equal(fast.trades, ref.trades, rtol=1e-9, atol=0)


def _market(rng: np.random.Generator, n: int, gaps: bool) -> tuple[np.ndarray, np.ndarray]:
    step = rng.integers(1, 4, n) if gaps else np.ones(n, dtype=np.int64)
    ts = 1_514_764_800_000 + np.cumsum(step) * HOUR
    return ts, 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))


@pytest.mark.parametrize("seed", range(24))
def test_engines_agree_on_random_configurations(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([2, 3, 50, 3000, 20000]))
    ts, close = _market(rng, n, gaps=bool(rng.integers(2)))
    kind = str(rng.choice(["return", "direction"]))
    fc = rng.normal(0.0, 1e-3, n) if kind == "return" else rng.uniform(0.0, 1.0, n)
    if rng.integers(2):
        fc[rng.random(n) < 0.2] = np.nan
    if rng.integers(2):  # ties
        fc = np.round(fc, 4)
    cfg = BacktestConfig.model_validate({
        "sizing": str(rng.choice(["fixed", "forecast", "volatility"])), "allow_short": bool(rng.integers(2)),
        "threshold": float(rng.choice([0.0, 1e-4, 0.1])) if kind == "direction" else float(rng.choice([0, 5e-4])),
        "max_leverage": float(rng.choice([0.5, 1.0, 3.0])), "fee_bps": float(rng.choice([0.0, 10.0, 50.0])),
        "slippage_bps": float(rng.choice([0.0, 5.0])), "vol_lookback": 24})
    funding = rng.normal(1e-5, 1e-4, n) if rng.integers(2) else None
    _check(*_both(monkeypatch, ts, close, fc, cfg, "1h", kind, funding=funding))


def test_engines_agree_on_a_wiped_out_equity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random trades at 250 bps a side take every curve with costs below the smallest normal float."""
    rng = np.random.default_rng(7)
    ts, close = _market(rng, 30_000, gaps=False)
    cfg = BacktestConfig.model_validate({"fee_bps": 250.0})
    fast, ref = _both(monkeypatch, ts, close, rng.normal(0, 1e-3, 30_000), cfg, "1h", "return")
    assert ref.equity["equity"].iloc[-1] < 1e-300
    _check(fast, ref)


@pytest.mark.parametrize(("name", "sizing"), [("BTC_USDT-1h.csv.gz", "volatility"), ("ETH_USDT-4h.csv.gz", "fixed"),
                                              ("ETH_USDT-1d.csv.gz", "forecast")])
def test_engines_agree_on_real_candles(monkeypatch: pytest.MonkeyPatch, name: str, sizing: str) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real candles {path} not available")
    df = pd.read_csv(path, usecols=["timestamp", "close"]).iloc[-20_000:]
    ts, close = df["timestamp"].to_numpy(), df["close"].to_numpy()
    fc = np.r_[np.log(close[1:] / close[:-1]), np.nan]  # last bar's move as the forecast (a real, tied signal)
    tf = name.split("-")[1].split(".")[0]
    cfg = BacktestConfig.model_validate({"sizing": sizing})
    _check(*_both(monkeypatch, ts, close, fc, cfg, tf, "return", funding=np.full(len(ts), 1e-5)))
