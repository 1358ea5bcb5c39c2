"""Backtest grids in one pass (trade/grid.py): every combination's strategy metrics equal the one-at-a-time
`simulate` (the oracle, the 1-D code path) to 1e-12, on random configurations over real candles with
outages, real swap funding, thresholds, reversals, every sizing and both forecast kinds."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import timeframe_ms
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.funding import funding_per_bar
from cryptonorm.trade.grid import simulate_grid

PANEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "panel"


def _read(name: str, **kw: Any) -> pd.DataFrame:
    path = PANEL / name
    if not path.exists():
        pytest.skip(f"real data {path} not available")
    return pd.read_csv(path, **kw)


@pytest.fixture(scope="module")
def swap() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """~3,000 hourly BTC perpetual-swap candles from 2020 with a 12-bar outage cut into them (this series has
    none of its own) and the real funding each bar pays (the outage's funding times on the bar after it)."""
    bars = _read("BTC_USDT_USDT-1h-futures.csv.gz", usecols=["timestamp", "close"]).iloc[3000:6000]
    bars = bars.drop(bars.index[1500:1512])
    ts = bars["timestamp"].to_numpy("int64")
    rates = _read("BTC_USDT_USDT-funding.csv.gz", usecols=["timestamp", "rate"])
    carry = funding_per_bar(ts, timeframe_ms("1h"), rates["timestamp"].to_numpy(), rates["rate"].to_numpy())
    return ts, bars["close"].to_numpy("float64"), carry


def _random_configs(rng: np.random.Generator, count: int, kind: str) -> list[BacktestConfig]:
    """Random settings; few distinct strategies so that several cost levels share one set of positions."""
    top = 0.3 if kind == "direction" else 0.004
    strategies = [{"threshold": float(rng.choice([0.0, rng.uniform(0, top)])),
                   "allow_short": bool(rng.random() < 0.7),
                   "sizing": str(rng.choice(["fixed", "forecast", "volatility"])),
                   "max_leverage": float(rng.choice([0.5, 1.0, 3.0])),
                   "target_vol": float(rng.uniform(0.2, 1.0)), "vol_lookback": int(rng.integers(2, 60))}
                  for _ in range(max(1, count // 3))]
    return [BacktestConfig.model_validate({**strategies[int(rng.integers(len(strategies)))],
                                           "fee_bps": float(rng.choice([0.0, rng.uniform(0, 40)])),
                                           "slippage_bps": float(rng.choice([0.0, rng.uniform(0, 10)]))})
            for _ in range(count)]


def _assert_same(got: dict[str, float], want: dict[str, float], what: str) -> None:
    assert list(got) == list(want), what
    for key, w in want.items():
        g = got[key]
        if isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), f"{what}: {key} {g} != NaN"
        else:
            assert g == pytest.approx(w, rel=1e-12, abs=1e-12), f"{what}: {key} {g} != {w}"
            assert type(g) is type(w), f"{what}: {key} {type(g)} != {type(w)}"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["return", "direction"])
@pytest.mark.parametrize("funded", [True, False])
def test_every_column_equals_its_one_at_a_time_backtest(swap: tuple[np.ndarray, np.ndarray, np.ndarray],
                                                        seed: int, kind: str, funded: bool) -> None:
    ts, close, carry = swap
    rng = np.random.default_rng(seed)
    assert np.count_nonzero(np.diff(ts) != timeframe_ms("1h")) >= 1  # an outage inside: a gap bar is traded
    if kind == "return":  # a noisy momentum forecast: long and short runs, reversals, NaN gaps in the forecast
        fc = np.r_[0.0, np.diff(np.log(close))] * 0.5 + rng.normal(0, 2e-3, len(close))
    else:
        fc = np.clip(0.5 + rng.normal(0, 0.15, len(close)), 0, 1)
    fc[rng.random(len(fc)) < 0.03] = np.nan
    configs = _random_configs(rng, 24, kind)
    funding = carry if funded else None
    got = simulate_grid(ts, close, fc, configs, "1h", kind, funding=funding, block_rows=int(rng.integers(1, 9)))
    assert len(got) == len(configs)
    for i, cfg in enumerate(configs):
        want = simulate(ts, close, fc, cfg, "1h", kind, funding=funding, forecast_stats=False).metrics["strategy"]
        _assert_same(got[i], want, f"config {i} {cfg.model_dump()}")
    assert any(m["trades"] > 10 for m in got) and any(m["fees_paid"] > 0 for m in got)  # not a vacuous grid


def test_block_size_does_not_change_a_figure(swap: tuple[np.ndarray, np.ndarray, np.ndarray],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Any block size gives the same figures, and no block holds more combinations than asked (a strategy
    with many cost levels is split: the memory stays bounded)."""
    from cryptonorm.trade import grid

    ts, close, carry = swap
    rng = np.random.default_rng(7)
    fc = rng.normal(0, 1e-3, len(close))
    configs = _random_configs(rng, 30, "return")
    configs += [configs[0].model_copy(update={"fee_bps": float(f)}) for f in range(9)]  # one strategy, 9 costs
    sizes: list[int] = []
    block = grid._block

    def spy(*args: Any) -> Any:
        sizes.append(len(args[6]))  # `which`: the block's combinations
        return block(*args)

    monkeypatch.setattr(grid, "_block", spy)
    one = simulate_grid(ts, close, fc, configs, "1h", "return", funding=carry, block_rows=2)
    assert max(sizes) <= 2 and sum(sizes) == len(configs)
    many = simulate_grid(ts, close, fc, configs, "1h", "return", funding=carry)
    assert pd.DataFrame(one).equals(pd.DataFrame(many))


def test_a_wiped_out_column_and_a_flat_one(swap: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Extremes: a column whose equity goes to 0 (the most costs allowed, 1,000 bps per side, on a reversal
    every bar: subnormal, then 0) and one never in the market."""
    ts, close, _ = swap
    fc = np.where(np.arange(len(close)) % 2 == 0, 1.0, -1.0)  # reverse on every bar
    configs = [BacktestConfig.model_validate({"fee_bps": 1000.0, "max_leverage": 3.0, "sizing": "forecast"}),
               BacktestConfig.model_validate({"threshold": 5.0})]
    got = simulate_grid(ts, close, fc, configs, "1h", "return")
    for cfg, g in zip(configs, got, strict=True):
        _assert_same(g, simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False).metrics["strategy"],
                     str(cfg.model_dump()))
    assert got[0]["total_return"] == pytest.approx(-1.0) and got[1]["trades"] == 0


def test_bad_inputs_are_the_backtests_own_errors() -> None:
    ts = np.arange(10, dtype=np.int64) * 3_600_000
    close = np.linspace(100, 110, 10)
    ok, bad = BacktestConfig(), BacktestConfig.model_validate({"threshold": 0.6})
    with pytest.raises(ConfigError, match="threshold"):  # any combination's threshold that can never trade
        simulate_grid(ts, close, np.full(10, 0.5), [ok, bad], "1h", "direction")
    with pytest.raises(DataError, match="funding has shape"):
        simulate_grid(ts, close, np.zeros(10), [ok], "1h", "return", funding=np.zeros(9))
    with pytest.raises(DataError, match="at least 2 bars"):
        simulate_grid(ts[:1], close[:1], np.zeros(1), [ok], "1h", "return")
    assert simulate_grid(ts, close, np.zeros(10), [], "1h", "return") == []


def test_the_grid_command_figures_are_the_one_at_a_time_ones(small_real_run: Path, tmp_path: Path) -> None:
    """`backtest RUN --grid` goes through split_metrics: each row equals simulate_split of its settings."""
    from cryptonorm.pipeline import rebacktest
    from cryptonorm.pipeline.backtesting import read_forecasts, simulate_split
    from cryptonorm.pipeline.rundir import finished_run

    run = Path(shutil.copytree(small_real_run, tmp_path / "run"))
    base = finished_run(run)
    combos = [{"threshold": t, "fee_bps": f, "allow_short": s}
              for t in (0.0, 0.0005) for f in (0.0, 7.5) for s in (True, False)]
    configs = [rebacktest.backtest_overrides(base, c) for c in combos]
    full = read_forecasts(run)
    got = rebacktest.split_metrics(full, configs, "val")
    for cfg, g in zip(configs, got, strict=True):
        _assert_same(g, simulate_split(full, cfg, "val", forecast_stats=False)[0].metrics["strategy"],
                     str(cfg.backtest.model_dump()))
    result = rebacktest.grid(run, {"threshold": [0.0, 0.0005], "fee_bps": [0.0, 7.5]}, write=False)
    assert result.table["val_sharpe"].tolist() == pytest.approx(
        [g["sharpe"] for g, c in zip(got, combos, strict=True) if c["allow_short"]], rel=1e-12)


def test_grid_command_outputs_match_the_one_at_a_time_path(small_real_run: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`cryptonorm backtest RUN --grid` writes the same grid.csv and selected.csv through the one-pass
    simulation as through the old path (simulate_split per combination, patched in as the oracle)."""
    from typer.testing import CliRunner

    from cryptonorm.cli import app
    from cryptonorm.pipeline import rebacktest
    from cryptonorm.pipeline.backtesting import simulate_split

    run = Path(shutil.copytree(small_real_run, tmp_path / "run"))
    args = ["backtest", str(run), "--grid", "backtest.threshold=[0, 0.0003, 0.001]",
            "--grid", "backtest.fee_bps=[0, 4, 10]"]
    outputs = {}
    for way in ("one pass", "one at a time"):
        if way == "one at a time":
            monkeypatch.setattr(rebacktest, "split_metrics", lambda full, configs, split: [
                simulate_split(full, c, split, forecast_stats=False)[0].metrics["strategy"] for c in configs])
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / way)])
        assert r.exit_code == 0, r.output
        outputs[way] = {name: pd.read_csv(tmp_path / way / name) for name in ("grid.csv", "selected.csv")}
    for name, want in outputs["one at a time"].items():
        got = outputs["one pass"][name]
        assert list(got.columns) == list(want.columns) and len(got) == len(want) == (9 if name == "grid.csv" else 3)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-12)


def test_a_ruined_column_follows_the_ruin_rule_of_the_single_backtest() -> None:
    """Leverage 20 held through a 10% fall loses more than the equity: `simulate` stops the book at the ruin
    (equity 0 from there on); the grid's column must say the same, beside a column that survives."""
    ts = np.arange(400, dtype=np.int64) * 3_600_000
    rng = np.random.default_rng(3)
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.002, 400))
    close[200:] *= 0.9  # one bar falls 10%
    fc = np.ones(400)
    configs = [BacktestConfig.model_validate({"max_leverage": 20.0, "sizing": "volatility", "target_vol": 10.0,
                                              "vol_lookback": 24, "fee_bps": 5.0}),
               BacktestConfig.model_validate({"fee_bps": 5.0})]
    single = [simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False) for cfg in configs]
    assert single[0].metrics.get("ruin") and not single[1].metrics.get("ruin")  # the case is what it claims
    got = simulate_grid(ts, close, fc, configs, "1h", "return")
    for g, s in zip(got, single, strict=True):
        _assert_same(g, s.metrics["strategy"], "ruin")
    assert got[0]["total_return"] == -1.0
