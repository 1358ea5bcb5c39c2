"""Issue 24: a wiped-out equity is reported as ruin (at bar t, equity 0 after), never as negative equity; every
run that is not ruined keeps its numbers exactly. Checked against a plain loop and through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import BacktestConfig
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.positions import book

HOUR = 3_600_000


def _loop(target: np.ndarray, close: np.ndarray, cost_rate: float) -> tuple[list[float], int | None]:
    """The equity bar by bar, the textbook way: once the equity is gone it is gone (no debt, no trading)."""
    eq, pos, ruin, out = 1.0, 0.0, None, [1.0]
    for t in range(1, len(close)):
        new = 0.0 if ruin is not None else float(target[t - 1])
        r = new * (close[t] / close[t - 1] - 1) - abs(new - pos) * cost_rate
        pos = new
        if ruin is None and eq * (1 + r) <= 0:
            ruin, eq = t, 0.0
        elif ruin is None:
            eq *= 1 + r
        out.append(eq)
    return out, ruin


def test_book_equals_a_plain_loop_with_and_without_ruin() -> None:
    rng = np.random.default_rng(3)
    ruined = 0
    for trial in range(60):
        n = 300
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        lev = float(rng.choice([0.5, 1.0, 5.0, 30.0]))
        target = np.clip(rng.normal(0, lev, n), -lev, lev)
        cost = float(rng.choice([0.0, 0.001, 0.05]))
        bar_ret = np.r_[0.0, close[1:] / close[:-1] - 1]
        run = book(target, bar_ret, cost)
        want, ruin = _loop(target, close, cost)
        assert run.ruin == ruin, trial
        np.testing.assert_allclose(run.equity, want, rtol=1e-12, atol=0)
        assert (run.equity >= 0).all()
        ruined += ruin is not None
        if ruin is None:  # not ruined: exactly the plain cumulative product, as before
            ret = target[:-1] * bar_ret[1:] - np.abs(np.diff(np.r_[0.0, target[:-1]])) * cost  # the old book
            assert np.array_equal(run.equity[1:], np.cumprod(ret + 1.0))
    assert 10 < ruined < 50  # both kinds of run were put to the test


def test_simulate_reports_the_ruin_bar_and_the_metrics_say_so() -> None:
    n = 400
    ts = np.arange(n, dtype="int64") * HOUR + 1_704_067_200_000
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.02, n)))
    fc = np.random.default_rng(2).normal(0, 1e-3, n)
    cfg = BacktestConfig(sizing="volatility", target_vol=10.0, max_leverage=100.0, fee_bps=1000.0)
    bt = simulate(ts, close, fc, cfg, "1h", "return")
    ruin = bt.metrics["ruin"]
    assert ruin is not None and ruin["time"].startswith("2024-01-")
    eq = bt.equity["equity"].to_numpy()
    assert eq[ruin["bar"]] == 0 and (eq[ruin["bar"]:] == 0).all() and (eq[:ruin["bar"]] > 0).all()
    assert (bt.equity["position"].to_numpy()[ruin["bar"] + 1:] == 0).all()
    s = bt.metrics["strategy"]
    assert s["total_return"] == -1.0 and s["max_drawdown"] == -1.0 and s["cagr"] == -1.0
    assert math.isfinite(s["sharpe"])
    fine = simulate(ts, close, fc, BacktestConfig(), "1h", "return")
    assert fine.metrics["ruin"] is None and (fine.equity["equity"] > 0).all()


def test_a_ruinous_backtest_through_the_cli_says_ruined(small_real_run: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["backtest", str(small_real_run), "--set", "backtest.sizing=volatility", "--set",
                                 "backtest.target_vol=10", "--set", "backtest.max_leverage=100", "--set",
                                 "backtest.fee_bps=1000", "--out", str(tmp_path / "bt"), "--format", "png"])
    assert r.exit_code == 0, r.stderr
    assert "RUINED at bar" in r.stdout
    metrics = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert metrics["ruin"]["bar"] >= 1 and metrics["strategy"]["total_return"] == -1.0
    assert min(metrics["strategy"]["max_drawdown"], 0) >= -1.0


@pytest.mark.parametrize("key", ["fee_bps", "slippage_bps"])
def test_costs_beyond_the_bound_are_refused_by_the_config(key: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BacktestConfig(**{key: 20_000.0})  # the issue's -67,502% return
