"""Backtest correctness: an independent plain-loop oracle on real candles, no look-ahead, no edge on noise,
edge cases, annualization, fees, drawdowns, per-year compounding, and the report helpers."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptonorm.atomic import json_safe as to_json_safe
from cryptonorm.config import BacktestConfig
from cryptonorm.errors import ConfigError, DataError
from cryptonorm.timeframes import bars_per_year
from cryptonorm.trade.backtest import simulate
from cryptonorm.trade.performance import drawdown, per_year, performance
from cryptonorm.trade.trades import TRADE_COLUMNS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the project root
HOUR = 3_600_000
DAY = 86_400_000
SIZINGS = ("fixed", "forecast", "volatility")


def _read(name: str) -> pd.DataFrame:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real candles {path} not available")
    return pd.read_csv(path, usecols=["timestamp", "close"])


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    return _read("BTC_USDT-1h.csv.gz")


@pytest.fixture(scope="module")
def btc_1d() -> pd.DataFrame:
    return _read("BTC_USDT-1d.csv.gz")


@pytest.fixture(scope="module")
def btc_slice(btc_1h: pd.DataFrame) -> pd.DataFrame:
    """The first 3,500 hourly bars: two exchange outages inside (after rows 492 and 3353)."""
    return btc_1h.iloc[:3500].reset_index(drop=True)


def _cfg(**kw: object) -> BacktestConfig:
    return BacktestConfig.model_validate(kw)


def _walk(n: int, seed: int, vol: float = 0.01, start: int = 1_577_836_800_000) -> tuple[np.ndarray, np.ndarray]:
    """A zero-drift geometric random walk on an hourly grid."""
    rng = np.random.default_rng(seed)
    ts = start + np.arange(n, dtype=np.int64) * HOUR
    return ts, 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


# ---------------------------------------------------------------- (1) the plain-loop oracle


def _reference(ts: np.ndarray, close: np.ndarray, fc: np.ndarray, cfg: BacktestConfig, timeframe: str,
               kind: str) -> tuple[list[float], list[float], list[float], list[tuple[int, int]]]:
    """The backtest written the plain way, bar by bar: positions, equity, buy-and-hold equity, trades."""
    step = {"1h": HOUR, "4h": 4 * HOUR, "1d": DAY}[timeframe]
    per_year_ = 365 * DAY / step
    rate = (cfg.fee_bps + cfg.slippage_bps) / 10_000
    cap = cfg.max_leverage
    positions, equity, bh = [0.0], [1.0], [1.0]
    log_returns: list[float] = []
    sum_sq, count = 0.0, 0
    decided = 0.0  # position decided at the previous close
    trades: list[tuple[int, int]] = []  # (first row held, last row held)
    for t in range(len(close)):
        if t > 0:
            pos = decided
            move = close[t] / close[t - 1] - 1
            equity.append(equity[-1] * (1 + pos * move - abs(pos - positions[-1]) * rate))
            bh.append(bh[-1] * (1 + move - (rate if t == 1 else 0.0)))
            side_now, side_before = np.sign(pos), np.sign(positions[-1])
            if side_before != 0 and side_now != side_before:
                trades[-1] = (trades[-1][0], t - 1)
            if side_now != 0 and side_now != side_before:
                trades.append((t, -1))
            positions.append(pos)
            log_returns.append(math.log(close[t] / close[t - 1]) / math.sqrt((ts[t] - ts[t - 1]) / step))
        # at the close of bar t: decide the position for bar t + 1
        signal = fc[t] - 0.5 if kind == "direction" else fc[t]
        if math.isnan(signal):
            side = 0
        else:
            side = 1 if signal > cfg.threshold else (-1 if signal < -cfg.threshold else 0)
        if side < 0 and not cfg.allow_short:
            side = 0
        if cfg.sizing == "fixed":
            size = 1.0
        elif cfg.sizing == "forecast":
            if not math.isnan(signal):
                sum_sq, count = sum_sq + signal * signal, count + 1
            rms = math.sqrt(sum_sq / count) if count else 0.0
            size = abs(signal) / rms if rms > 0 and not math.isnan(signal) else 0.0
        else:
            if len(log_returns) >= cfg.vol_lookback:
                vol = statistics.stdev(log_returns[-cfg.vol_lookback:]) * math.sqrt(per_year_)
                size = cfg.target_vol / vol if vol > 0 else math.inf
            else:
                size = 0.0
        decided = side * min(size, cap)
    if trades and trades[-1][1] == -1:
        trades[-1] = (trades[-1][0], len(close) - 1)
    return positions, equity, bh, trades


@pytest.mark.parametrize("sizing", SIZINGS)
@pytest.mark.parametrize("kind", ["return", "direction"])
def test_equity_matches_plain_loop_on_real_btc(btc_slice: pd.DataFrame, sizing: str, kind: str) -> None:
    ts, close = btc_slice["timestamp"].to_numpy(), btc_slice["close"].to_numpy()
    rng = np.random.default_rng(7)
    if kind == "return":
        fc = rng.normal(0.0, 2e-3, len(close))
    else:
        fc = rng.uniform(0.0, 1.0, len(close))
    fc[rng.random(len(close)) < 0.05] = np.nan  # some bars without a forecast: flat
    cfg = _cfg(sizing=sizing, threshold=0.0005 if kind == "return" else 0.05, fee_bps=10, slippage_bps=5,
               max_leverage=1.5, vol_lookback=24, target_vol=0.4, allow_short=kind == "return")
    bt = simulate(ts, close, fc, cfg, "1h", kind)
    positions, equity, bh, trades = _reference(ts, close, fc, cfg, "1h", kind)

    np.testing.assert_allclose(bt.equity["position"], positions, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bt.equity["equity"], equity, rtol=1e-9)
    np.testing.assert_allclose(bt.equity["bh_equity"], bh, rtol=1e-12)
    m = bt.metrics["strategy"]
    assert m["total_return"] == pytest.approx(equity[-1] - 1, rel=1e-9, abs=1e-12)
    assert bt.metrics["gap_bars"] == 2 and bt.equity["gap"].sum() == 2
    assert list(bt.trades.columns) == TRADE_COLUMNS
    assert m["trades"] == len(bt.trades) == len(trades)
    first_rows = np.searchsorted(ts, bt.trades["entry_time"].to_numpy()) + 1
    last_rows = np.searchsorted(ts, bt.trades["exit_time"].to_numpy())
    assert list(zip(first_rows.tolist(), last_rows.tolist(), strict=True)) == trades
    assert (bt.trades["bars_held"] == last_rows - first_rows + 1).all()
    # a trade neither entered nor left by a reversal returns exactly the equity change across it, fees included
    pos = np.asarray(positions)
    eq = np.asarray(equity)
    for (a, b), r in zip(trades, bt.trades["return"], strict=True):
        reversal_in = np.sign(pos[a - 1]) == -np.sign(pos[a])
        reversal_out = b + 1 < len(pos) and np.sign(pos[b + 1]) == -np.sign(pos[b])
        if not (reversal_in or reversal_out):
            end = min(b + 1, len(eq) - 1)
            assert r == pytest.approx(eq[end] / eq[a - 1] - 1, rel=1e-9, abs=1e-12)
    assert np.all(np.abs(pos) <= cfg.max_leverage + 1e-12)
    if not cfg.allow_short:
        assert np.all(pos >= 0)


# ---------------------------------------------------------------- (2) no look-ahead


@pytest.mark.parametrize("sizing", SIZINGS)
def test_truncating_the_future_leaves_past_positions_unchanged(btc_slice: pd.DataFrame, sizing: str) -> None:
    ts, close = btc_slice["timestamp"].to_numpy(), btc_slice["close"].to_numpy()
    fc = np.random.default_rng(3).normal(0.0, 2e-3, len(close))
    cfg = _cfg(sizing=sizing, vol_lookback=48, max_leverage=2.0)
    full = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False).equity
    for t in (1, 30, 47, 48, 49, 492, 493, 494, 1777, len(close) - 2):
        cut = simulate(ts[: t + 1], close[: t + 1], fc[: t + 1], cfg, "1h", "return", forecast_stats=False).equity
        for col in ("position", "cost", "strategy_return", "equity", "bh_equity"):
            np.testing.assert_array_equal(cut[col].to_numpy(), full[col].to_numpy()[: t + 1], err_msg=f"{col} t={t}")


@pytest.mark.parametrize("sizing", SIZINGS)
def test_position_for_next_bar_ignores_that_bars_data(btc_slice: pd.DataFrame, sizing: str) -> None:
    """The position held over bar t+1 is fixed at the close of bar t: scrambling close[t+1:] and
    forecast[t+1:] must not move it."""
    ts, close = btc_slice["timestamp"].to_numpy(), btc_slice["close"].to_numpy()
    rng = np.random.default_rng(4)
    fc = rng.normal(0.0, 2e-3, len(close))
    cfg = _cfg(sizing=sizing, vol_lookback=24)
    base = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False).equity["position"].to_numpy()
    for t in (100, 1000, 3000):
        c2, f2 = close.copy(), fc.copy()
        c2[t + 1:] *= rng.uniform(0.5, 2.0, len(c2) - t - 1)
        f2[t + 1:] = -f2[t + 1:] * 100
        moved = simulate(ts, c2, f2, cfg, "1h", "return", forecast_stats=False).equity["position"].to_numpy()
        np.testing.assert_array_equal(moved[: t + 2], base[: t + 2])
        assert not np.array_equal(moved[t + 2:], base[t + 2:])  # the test can see a change when there is one


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 80), cut=st.integers(1, 79),
       sizing=st.sampled_from(SIZINGS), short=st.booleans())
def test_no_lookahead_property(seed: int, n: int, cut: int, sizing: str, short: bool) -> None:
    ts, close = _walk(n, seed)
    fc = np.random.default_rng(seed + 1).normal(0, 1, n)
    cfg = _cfg(sizing=sizing, vol_lookback=5, allow_short=short, max_leverage=1.7)
    k = min(cut, n - 1) + 1
    full = simulate(ts, close, fc, cfg, "1h", "return", forecast_stats=False).equity["position"].to_numpy()
    part = simulate(ts[:k], close[:k], fc[:k], cfg, "1h", "return", forecast_stats=False).equity["position"]
    np.testing.assert_array_equal(part.to_numpy(), full[:k])
    assert np.all(np.abs(full) <= 1.7) and (short or np.all(full >= 0))


# ---------------------------------------------------------------- (3) no edge on noise, an edge on a planted signal


def test_no_edge_on_random_walks() -> None:
    """Zero-drift random walks: neither random forecasts nor the last return (legitimately known, useless
    here) may show an edge. A one-bar misalignment would turn the last-return forecast into a perfect one."""
    n, seeds = 4000, 20
    se = math.sqrt(bars_per_year("1h") / n) / math.sqrt(seeds)  # std error of the mean annualized Sharpe
    random_fc, last_ret, last_sign = [], [], []
    cfg = _cfg(fee_bps=0.0)
    for seed in range(seeds):
        ts, close = _walk(n, seed)
        noise = np.random.default_rng(1000 + seed).normal(0.0, 1.0, n)
        random_fc.append(simulate(ts, close, noise, cfg, "1h", "return", forecast_stats=False)
                         .metrics["strategy"]["sharpe"])
        r = np.r_[0.0, np.diff(np.log(close))]
        bt = simulate(ts, close, r, cfg, "1h", "return", forecast_stats=False)
        last_ret.append(bt.metrics["strategy"]["sharpe"])
        last_sign.append(bt.metrics["baselines"]["last_sign"]["sharpe"])
    for name, sharpes in (("random", random_fc), ("last return", last_ret), ("last sign", last_sign)):
        assert abs(np.mean(sharpes)) < 4 * se, f"{name}: mean Sharpe {np.mean(sharpes):.2f} (se {se:.2f})"
    assert 4 * se < 1.5  # the bound is tight enough to mean something


def test_planted_signal_shows_an_edge_before_costs() -> None:
    n = 4000
    ts, close = _walk(n, 42)
    nxt = np.r_[close[1:] / close[:-1] - 1, np.nan]  # the future: only a planted signal may know it
    fc = nxt + np.random.default_rng(0).normal(0.0, 0.01, n)
    fc[-1] = 0.0
    gross = simulate(ts, close, fc, _cfg(fee_bps=0.0), "1h", "return")
    assert gross.metrics["strategy"]["sharpe"] > 20  # the null's std error here is ~1.5
    assert gross.metrics["forecast"]["ic_pearson"] > 0.5
    assert gross.metrics["forecast"]["directional_accuracy"] > 0.65
    assert gross.metrics["strategy"]["total_return"] > gross.metrics["baselines"]["last_sign"]["total_return"]
    net = simulate(ts, close, fc, _cfg(fee_bps=10.0), "1h", "return")
    assert net.metrics["strategy"]["total_return"] < gross.metrics["strategy"]["total_return"]


# ---------------------------------------------------------------- (4) edge cases


@pytest.mark.parametrize("forecast", [0.0, np.nan])
def test_no_trades_gives_flat_equity_and_defined_metrics(btc_slice: pd.DataFrame, forecast: float) -> None:
    ts, close = btc_slice["timestamp"].to_numpy()[:500], btc_slice["close"].to_numpy()[:500]
    bt = simulate(ts, close, np.full(500, forecast), _cfg(), "1h", "return")
    assert (bt.equity["equity"] == 1.0).all() and (bt.equity["position"] == 0).all()
    assert len(bt.trades) == 0 and list(bt.trades.columns) == TRADE_COLUMNS
    m = bt.metrics["strategy"]
    assert m["trades"] == 0 and m["total_return"] == 0 and m["cagr"] == 0 and m["max_drawdown"] == 0
    assert m["exposure"] == 0 and m["turnover"] == 0 and m["fees_paid"] == 0 and m["volatility"] == 0
    for undefined in ("sharpe", "sortino", "calmar", "hit_rate", "win_rate", "profit_factor"):
        assert math.isnan(m[undefined]), undefined  # documented: NaN (null in JSON), not a fake 0
    assert to_json_safe(m) == to_json_safe(bt.metrics["baselines"]["flat"])
    safe = json.loads(json.dumps(to_json_safe(bt.metrics), allow_nan=False))
    assert safe["strategy"]["sharpe"] is None and safe["strategy"]["trades"] == 0


def test_always_in_the_market_equals_buy_and_hold_minus_one_fee(btc_slice: pd.DataFrame) -> None:
    ts, close = btc_slice["timestamp"].to_numpy(), btc_slice["close"].to_numpy()
    bt = simulate(ts, close, np.full(len(close), 0.01), _cfg(fee_bps=10, slippage_bps=2), "1h", "return")
    np.testing.assert_array_equal(bt.equity["equity"], bt.equity["bh_equity"])
    c = 12 / 10_000
    r1 = close[1] / close[0] - 1
    # the entry fee is paid at close[0] on the starting equity: E_N = P_N / P_0 * (1 - c / (1 + r1))
    assert bt.equity["equity"].iloc[-1] == pytest.approx(close[-1] / close[0] * (1 - c / (1 + r1)), rel=1e-12)
    m, bh = bt.metrics["strategy"], bt.metrics["buy_and_hold"]
    assert to_json_safe(m) == to_json_safe(bh)
    assert m["trades"] == 1 and m["fees_paid"] == pytest.approx(c) and m["exposure"] == 1.0
    assert bt.trades["closed"].tolist() == [False] and bt.trades["bars_held"].iloc[0] == len(close) - 1


def test_gap_bars_are_counted_and_carry_the_real_price_change() -> None:
    ts, close = _walk(40, 5)
    keep = np.r_[0:10, 13:40]  # bars 10, 11, 12 missing: one outage of 3 bars
    ts, close = ts[keep], close[keep]
    fc = np.full(len(ts), 0.01)
    bt = simulate(ts, close, fc, _cfg(fee_bps=0), "1h", "return")
    assert bt.metrics["gap_bars"] == 1 and bt.metrics["missing_bars"] == 3
    eq = bt.equity
    assert eq["gap"].tolist() == [i == 10 for i in range(len(ts))]
    assert eq["strategy_return"].iloc[10] == pytest.approx(close[10] / close[9] - 1, rel=1e-12)


def test_real_btc_gaps_are_all_reported(btc_1h: pd.DataFrame) -> None:
    gaps = pd.read_csv(DATA / "BTC_USDT-1h.gaps.csv")
    ts, close = btc_1h["timestamp"].to_numpy(), btc_1h["close"].to_numpy()
    bt = simulate(ts, close, np.zeros(len(ts)), _cfg(), "1h", "return", forecast_stats=False)
    assert bt.metrics["gap_bars"] == len(gaps) == 28
    assert bt.metrics["missing_bars"] == gaps["missing_bars"].sum() == 128
    assert bt.metrics["bars"] == len(ts) and bt.metrics["periods"] == len(ts) - 1


def test_single_bar_is_a_clear_data_error() -> None:
    with pytest.raises(DataError, match="at least 2 bars"):
        simulate(np.array([0]), np.array([100.0]), np.array([0.1]), _cfg(), "1h", "return")
    with pytest.raises(DataError, match="at least 2 bars"):
        simulate(np.array([], dtype=np.int64), np.array([]), np.array([]), _cfg(), "1h", "return")


def test_two_bars_is_the_smallest_backtest() -> None:
    bt = simulate(np.array([0, HOUR]), np.array([100.0, 110.0]), np.array([0.1, np.nan]), _cfg(fee_bps=0),
                  "1h", "return")
    assert bt.equity["equity"].tolist() == [1.0, pytest.approx(1.1)]
    assert math.isnan(bt.metrics["strategy"]["sharpe"])  # one return: no std


def test_volatility_kind_cannot_be_backtested() -> None:
    ts, close = _walk(10, 0)
    with pytest.raises(ConfigError, match="target.kind 'return' or 'direction'"):
        simulate(ts, close, np.zeros(10), _cfg(), "1h", "volatility")
    with pytest.raises(ConfigError, match="unknown"):
        simulate(ts, close, np.zeros(10), _cfg(), "1h", "price")


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"close": np.ones(9)}, DataError, "same length"),
    ({"timestamps": np.r_[0, 0, np.arange(2, 10)] * HOUR}, DataError, "strictly increasing"),
    ({"close": np.r_[1.0, -1.0, np.ones(8)]}, DataError, "finite and > 0"),
    ({"close": np.r_[1.0, np.nan, np.ones(8)]}, DataError, "finite and > 0"),
    ({"forecast": np.r_[np.inf, np.zeros(9)]}, DataError, "infinite"),
    ({"timeframe": "1x"}, DataError, "timeframe"),
    ({"kind": "direction", "forecast": np.full(10, 1.2)}, DataError, r"\[0, 1\]"),
    ({"kind": "direction", "forecast": np.full(10, 0.5), "cfg": _cfg(threshold=0.5)}, ConfigError, "below 0.5"),
])
def test_bad_inputs_are_named(change: dict[str, object], error: type[Exception], match: str) -> None:
    ts, close = _walk(10, 0)
    args: dict[str, object] = {"timestamps": ts, "close": close, "forecast": np.zeros(10), "cfg": _cfg(),
                               "timeframe": "1h", "kind": "return"}
    args.update(change)
    with pytest.raises(error, match=match):
        simulate(**args)  # type: ignore[arg-type]


def test_direction_thresholds_and_no_shorts() -> None:
    ts = np.arange(6, dtype=np.int64) * HOUR
    close = np.full(6, 100.0)
    p = np.array([0.7, 0.55, 0.3, 0.45, np.nan, 0.9])
    pos = simulate(ts, close, p, _cfg(threshold=0.1), "1h", "direction").equity["position"].tolist()
    assert pos == [0.0, 1.0, 0.0, -1.0, 0.0, 0.0]  # row t holds the decision of close t - 1
    pos = simulate(ts, close, p, _cfg(threshold=0.1, allow_short=False), "1h", "direction").equity["position"]
    assert pos.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("sizing", SIZINGS)
def test_every_sizing_is_capped_at_max_leverage(sizing: str) -> None:
    ts, close = _walk(600, 1, vol=0.001)  # calm market (9% a year): volatility sizing wants 5x
    fc = np.random.default_rng(2).standard_t(2, 600) * 1e-3  # fat tails: forecast sizing wants > 3x at times
    for cap in (0.5, 1.0, 3.0):
        pos = simulate(ts, close, fc, _cfg(sizing=sizing, max_leverage=cap, vol_lookback=24), "1h", "return",
                       forecast_stats=False).equity["position"].to_numpy()
        reach = min(cap, 1.0) if sizing == "fixed" else cap  # fixed sizing is 1x, or the cap if lower
        assert np.abs(pos).max() == pytest.approx(reach)  # reached, never exceeded


def test_forecast_metrics_use_the_next_bars_outcome() -> None:
    ts, close = _walk(300, 9)
    nxt = np.r_[np.log(close[1:] / close[:-1]), np.nan]
    bt = simulate(ts, close, np.nan_to_num(nxt), _cfg(), "1h", "return")
    assert bt.metrics["forecast"]["directional_accuracy"] == 1.0 and bt.metrics["forecast"]["n"] == 299
    up = np.r_[(close[1:] > close[:-1]).astype(float), 0.5]
    bt = simulate(ts, close, up, _cfg(), "1h", "direction")
    assert bt.metrics["forecast"]["accuracy"] == 1.0 and bt.metrics["forecast"]["auc"] == 1.0


# ---------------------------------------------------------------- (5) annualization


@pytest.mark.parametrize(("timeframe", "periods"), [("1h", 8760), ("4h", 2190), ("1d", 365)])
def test_sharpe_sortino_volatility_annualization(timeframe: str, periods: int) -> None:
    r = np.array([0.01, -0.005, 0.02, 0.0, 0.003, -0.012])
    m = performance(r, np.ones(6), timeframe, np.zeros(6))
    assert bars_per_year(timeframe) == periods
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(periods), rel=1e-12)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(periods))
    assert m["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(periods), rel=1e-12)
    assert m["years"] == pytest.approx(6 / periods)
    assert m["cagr"] == pytest.approx(np.prod(1 + r) ** (periods / 6) - 1, rel=1e-9)


def test_cagr_uses_calendar_time_across_gaps() -> None:
    r = np.array([0.1, 0.0])
    ts = np.array([0, DAY, 365 * DAY])  # one year between the first and last equity point, whatever the bars
    assert performance(r, np.ones(2), "1d", np.zeros(2), timestamps=ts)["cagr"] == pytest.approx(0.1)


# ---------------------------------------------------------------- (6) fees


def test_known_position_changes_pay_exactly_the_expected_cost() -> None:
    ts = np.arange(7, dtype=np.int64) * HOUR
    close = np.full(7, 100.0)  # prices never move: every change of equity is a cost
    fc = np.array([1.0, -1.0, -1.0, 0.0, 1.0, 1.0, -1.0])  # the last one is never traded
    bt = simulate(ts, close, fc, _cfg(fee_bps=10, slippage_bps=5), "1h", "return")
    eq = bt.equity
    assert eq["position"].tolist() == [0, 1, -1, -1, 0, 1, 1]
    rate = 15 / 10_000
    expected = np.array([0, 1, 2, 0, 1, 1, 0]) * rate  # |dpos|: entry, reversal, hold, exit, entry, hold
    np.testing.assert_allclose(eq["cost"], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(eq["equity"], np.cumprod(1 - expected), rtol=1e-15)
    m = bt.metrics
    assert m["costs"]["fee_bps"] == 10 and m["costs"]["slippage_bps"] == 5 and m["costs"]["bps_per_side"] == 15
    assert m["strategy"]["fees_paid"] == pytest.approx(float(np.dot(expected, np.r_[1, np.cumprod(1 - expected)[:-1]])))
    assert m["strategy"]["turnover"] * m["strategy"]["years"] == pytest.approx(5)
    t = bt.trades
    assert t["side"].tolist() == ["long", "short", "long"] and t["closed"].tolist() == [True, True, False]
    # each trade pays its entry and its exit (a reversal's 2 units split 1 and 1); the open one only its entry
    np.testing.assert_allclose(t["return"], [(1 - rate) ** 2 - 1, (1 - rate) ** 2 - 1, -rate], rtol=1e-12)
    assert t["bars_held"].tolist() == [1, 2, 2]
    assert t["entry_time"].tolist() == [0, HOUR, 4 * HOUR] and t["exit_time"].tolist() == [HOUR, 3 * HOUR, 6 * HOUR]


def test_fractional_positions_pay_on_traded_notional() -> None:
    ts = np.arange(5, dtype=np.int64) * HOUR
    fc = np.array([1.0, -1.0, 1.0, 1.0, 0.0])
    bt = simulate(ts, np.full(5, 50.0), fc, _cfg(max_leverage=0.25, fee_bps=20), "1h", "return")
    assert bt.equity["position"].tolist() == [0, 0.25, -0.25, 0.25, 0.25]
    np.testing.assert_allclose(bt.equity["cost"], np.array([0, 0.25, 0.5, 0.5, 0]) * 20e-4, atol=1e-15)


# ---------------------------------------------------------------- (7) drawdowns


def test_max_drawdown_and_duration_on_a_hand_built_curve() -> None:
    curve = np.array([1.0, 1.2, 0.9, 1.0, 1.25, 1.1])  # peak 1.2 (day 1), trough 0.9, back above on day 4
    r = curve[1:] / curve[:-1] - 1
    m = performance(r, np.ones(5), "1d", np.zeros(5))
    assert m["max_drawdown"] == pytest.approx(0.9 / 1.2 - 1)
    assert m["max_drawdown_bars"] == 3 and m["max_drawdown_days"] == pytest.approx(3.0)
    assert m["max_drawdown_recovered"] == 1.0
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.25)


def test_unrecovered_drawdown_runs_to_the_end_in_calendar_days() -> None:
    curve = np.array([1.0, 1.5, 1.0, 1.2])
    ts = np.array([0, DAY, 2 * DAY, 10 * DAY])  # an 8-day outage before the last bar
    dd = drawdown(curve, ts)
    assert dd == {"max_drawdown": pytest.approx(-1 / 3), "bars": 2, "days": 9.0, "recovered": 0.0}
    flat = drawdown(np.ones(4), ts)
    assert flat["max_drawdown"] == 0 and flat["bars"] == 0


# ---------------------------------------------------------------- (8) per year


def test_per_year_returns_compound_to_the_total(btc_1d: pd.DataFrame) -> None:
    ts, close = btc_1d["timestamp"].to_numpy(), btc_1d["close"].to_numpy()
    fc = np.random.default_rng(11).normal(0.0, 0.02, len(ts))
    bt = simulate(ts, close, fc, _cfg(sizing="forecast"), "1d", "return")
    years = bt.metrics["per_year"]
    assert [y["year"] for y in years] == list(range(2017, 2026))
    assert sum(y["bars"] for y in years) == bt.metrics["periods"]
    total = np.prod([1 + y["return"] for y in years]) - 1
    assert total == pytest.approx(bt.metrics["strategy"]["total_return"], rel=1e-9)
    bh_total = np.prod([1 + y["bh_return"] for y in years]) - 1
    assert bh_total == pytest.approx(bt.metrics["buy_and_hold"]["total_return"], rel=1e-9)
    assert all(-1 <= y["max_drawdown"] <= 0 for y in years)
    assert min(y["max_drawdown"] for y in years) >= bt.metrics["strategy"]["max_drawdown"] - 1e-12


def test_per_year_splits_at_new_year_utc() -> None:
    new_year_2021 = 1_609_459_200_000
    ts = new_year_2021 + np.array([-2, -1, 0, 1]) * HOUR
    rows = per_year(ts, np.array([0.01, 0.02, -0.01, 0.03]), "1h")
    assert [(r["year"], r["bars"]) for r in rows] == [(2020, 2), (2021, 2)]
    assert rows[0]["return"] == pytest.approx(1.01 * 1.02 - 1)


# ---------------------------------------------------------------- JSON and report


def test_metrics_are_json_safe(btc_slice: pd.DataFrame) -> None:
    ts, close = btc_slice["timestamp"].to_numpy()[:300], btc_slice["close"].to_numpy()[:300]
    bt = simulate(ts, close, np.random.default_rng(0).normal(0, 1e-3, 300), _cfg(), "1h", "return")
    safe = to_json_safe(bt.metrics)
    text = json.dumps(safe, allow_nan=False)
    back = json.loads(text)
    assert set(back) >= {"strategy", "buy_and_hold", "baselines", "per_year", "costs", "forecast", "bars",
                         "gap_bars"}
    assert set(back["baselines"]) == {"flat", "last_sign"}
    assert to_json_safe({"a": (np.float32(1.5), np.int64(2), np.inf, np.bool_(True))}) == {"a": [1.5, 2, None, True]}


def test_plot_and_tables(tmp_path: Path, btc_slice: pd.DataFrame) -> None:
    from rich.console import Console

    from cryptonorm.render import plots as report

    ts, close = btc_slice["timestamp"].to_numpy()[:800], btc_slice["close"].to_numpy()[:800]
    bt = simulate(ts, close, np.random.default_rng(0).normal(0, 1e-3, 800), _cfg(), "1h", "return")
    for log_scale in (False, True):
        out = report.plot_equity(bt.equity, bt.metrics, tmp_path / "plots" / f"eq{log_scale}.png", "BTC 1h",
                                 log_scale=log_scale)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["eqFalse.png", "eqTrue.png"]  # no temp left

    console = Console(record=True, width=160, file=io.StringIO())
    console.print(report.metrics_table(bt.metrics))
    text = console.export_text()
    for word in ("Sharpe", "Strategy", "Buy & hold", "Flat", "Last sign", "slippage 0", "2017"):
        assert word in text
    # the tables also render metrics that went through JSON (None instead of NaN)
    Console(file=io.StringIO(), width=160).print(report.metrics_table(to_json_safe(bt.metrics)))


def test_atomic_savefig_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from cryptonorm.render.plots import atomic_savefig

    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    with pytest.raises(ValueError):
        atomic_savefig(fig, tmp_path / "x.notaformat")
    assert list(tmp_path.iterdir()) == []
    atomic_savefig(fig, tmp_path / "x.png")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


# ---------------------------------------------------------------- the fast paths agree with the plain ones


def test_forecast_metrics_match_scipy_with_ties() -> None:
    from scipy import stats

    from cryptonorm.evaluate.forecast import forecast_metrics, rankdata

    rng = np.random.default_rng(3)
    pred = np.round(rng.normal(0.0, 1.0, 2000), 1)  # rounded: many ties
    y = pred * 0.3 + np.round(rng.normal(0.0, 1.0, 2000), 1)
    np.testing.assert_array_equal(rankdata(pred), stats.rankdata(pred))
    np.testing.assert_array_equal(rankdata(np.arange(5.0)), [1, 2, 3, 4, 5])
    m = forecast_metrics(pred, y, "return")
    assert m["ic_spearman"] == pytest.approx(stats.spearmanr(pred, y)[0], abs=1e-12)
    assert m["ic_pearson"] == pytest.approx(stats.pearsonr(pred, y)[0], abs=1e-12)
    p = np.clip(np.round(rng.uniform(0, 1, 2000), 2), 1e-7, 1 - 1e-7)
    up = (rng.uniform(0, 1, 2000) < p).astype("float64")
    d = forecast_metrics(p, up, "direction")
    u = stats.mannwhitneyu(p[up == 1], p[up == 0]).statistic  # AUC = U / (n_pos n_neg), ties half
    assert d["auc"] == pytest.approx(u / ((up == 1).sum() * (up == 0).sum()), abs=1e-12)
    assert d["ic_spearman"] == pytest.approx(stats.spearmanr(p, up)[0], abs=1e-12)
    assert math.isnan(forecast_metrics(np.ones(10), y[:10], "return")["ic_spearman"])


@pytest.mark.parametrize("allow_short", [True, False])
def test_shared_work_gives_the_same_metrics_as_performance_on_each_series(allow_short: bool) -> None:
    """simulate reuses trades, equity and turnover between the strategy, its cost-free twin and the
    baselines; each must equal `performance` run from scratch on positions rebuilt here."""
    rng = np.random.default_rng(5)
    n = 3000
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * HOUR
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    fc = rng.normal(0, 1e-3, n)
    cfg = _cfg(sizing="forecast", fee_bps=7, slippage_bps=3, max_leverage=1.5, allow_short=allow_short)
    bt = simulate(ts, close, fc, cfg, "1h", "return")
    bar = np.r_[0.0, close[1:] / close[:-1] - 1]
    rate = 10 / 1e4

    def series(pos: np.ndarray, c: float) -> dict[str, float]:
        fee = np.abs(np.diff(pos, prepend=0.0)) * c
        return performance((pos * bar - fee)[1:], pos[1:], "1h", fee[1:], timestamps=ts)

    pos = bt.equity["position"].to_numpy()
    ls = np.r_[0.0, np.sign(bar[:-1])]
    ls = ls if allow_short else np.maximum(ls, 0.0)
    expected = {"strategy": series(pos, rate), "strategy_before_costs": series(pos, 0.0),
                "buy_and_hold": series(np.r_[0.0, np.ones(n - 1)], rate), "flat": series(np.zeros(n), rate),
                "last_sign": series(ls, rate)}
    got = {**{k: bt.metrics[k] for k in ("strategy", "strategy_before_costs", "buy_and_hold")},
           **bt.metrics["baselines"]}
    for name, want in expected.items():
        assert got[name].keys() == want.keys(), name
        for key, value in want.items():
            assert got[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (name, key)


def test_per_year_skips_a_year_without_bars() -> None:
    ts = np.array([pd.Timestamp(d, tz="UTC").value // 1_000_000 for d in
                   ("2019-12-31 23:00", "2020-06-01", "2022-03-01", "2022-03-02", "2023-01-01")])
    rows = per_year(ts, np.array([0.01, 0.02, -0.01, 0.03, 0.0]), "1d")
    assert [(r["year"], r["bars"]) for r in rows] == [(2019, 1), (2020, 1), (2022, 2), (2023, 1)]


# ---------------------------------------------------------------- (9) the vectorized shortcuts against plain loops


def _loop_trades(pos: np.ndarray, ret: np.ndarray, cost: np.ndarray) -> list[tuple[float, float]]:
    """(return, mean |position|) of each trade, bar by bar, from the per-row series of a backtest: a trade
    grows by 1 + return on each bar it holds; a reversal's cost is split |position| / |change| between the
    trade it closes and the trade it opens; an exit to flat charges the whole cost of that bar."""
    out: list[tuple[float, float]] = []
    growth, sizes = 0.0, []  # the open trade, if sizes
    for t in range(1, len(pos)):
        p, q = pos[t], pos[t - 1]
        if q != 0 and np.sign(p) != np.sign(q):  # the trade held over bar t-1 closes at close[t-1]
            out.append((growth * (1 - cost[t] * abs(q) / abs(p - q)) - 1, float(np.mean(sizes))))
            sizes = []
        if p != 0 and np.sign(p) != np.sign(q):  # a trade opens: only its share of the cost
            growth, sizes = 1 + ret[t] + cost[t] - cost[t] * abs(p) / abs(p - q), [abs(p)]
        elif p != 0:
            growth, sizes = growth * (1 + ret[t]), [*sizes, abs(p)]
    if sizes:
        out.append((growth - 1, float(np.mean(sizes))))
    return out


@pytest.mark.parametrize(("sizing", "short", "funding"), [("fixed", True, False), ("forecast", True, True),
                                                          ("volatility", False, False), ("fixed", False, True)])
def test_trade_returns_and_sizes_match_a_bar_by_bar_loop(btc_slice: pd.DataFrame, sizing: str, short: bool,
                                                         funding: bool) -> None:
    """Trades come from one np.multiply.reduceat over the trade starts, reversals split after: check every
    trade (reversals included, which the oracle above skips) against a loop over the bars."""
    ts, close = btc_slice["timestamp"].to_numpy(), btc_slice["close"].to_numpy()
    rng = np.random.default_rng(3)
    fc = rng.normal(0.0, 2e-3, len(close))
    fc[rng.random(len(close)) < 0.2] = np.nan  # flat stretches between trades too
    carry = rng.normal(1e-5, 3e-5, len(close)) if funding else None
    cfg = _cfg(sizing=sizing, allow_short=short, fee_bps=10, slippage_bps=5, max_leverage=0.7, vol_lookback=24)
    bt = simulate(ts, close, fc, cfg, "1h", "return", funding=carry, forecast_stats=False)
    eq = bt.equity
    want = _loop_trades(eq["position"].to_numpy(), eq["strategy_return"].to_numpy(), eq["cost"].to_numpy())
    assert len(want) == len(bt.trades) > 100
    np.testing.assert_allclose(bt.trades["return"], [r for r, _ in want], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(bt.trades["size"], [s for _, s in want], rtol=1e-12)
    wins = sum(r > 0 for r, _ in want) / len(want)
    assert bt.metrics["strategy"]["win_rate"] == pytest.approx(wins, abs=1e-12)
    # performance() on the bare series finds the same trades without simulate's shared factors
    r, p, f = (eq[k].to_numpy()[1:] for k in ("strategy_return", "position", "cost"))
    assert performance(r, p, "1h", f, timestamps=ts)["win_rate"] == pytest.approx(wins, abs=1e-12)


def _loop_drawdown(eq: list[float]) -> tuple[float, int, int, bool]:
    """(max drawdown, peak index, end index, recovered) by a loop: the first deepest trough, the last time
    at its peak before it, the first time back at that peak after it (else the last bar)."""
    ratios, top = [], -math.inf
    for e in eq:
        top = max(top, e)
        ratios.append(e / top)
    trough = ratios.index(min(ratios))
    top = max(eq[: trough + 1])
    start = max(j for j in range(trough + 1) if eq[j] == top)
    back = [j for j in range(trough, len(eq)) if eq[j] >= top]
    return min(ratios) - 1, start, back[0] if back else len(eq) - 1, bool(back)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawdown_span_matches_a_loop_far_from_the_trough(seed: int) -> None:
    """The peak and the recovery are found by scans in growing blocks from the trough: put them thousands of
    bars away, with plateaus at the peak (flat equity out of the market) to hit 'the last time at the peak'."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.01, 6000)
    steps[rng.random(6000) < 0.3] = 0.0  # plateaus: equal equity values
    eq = np.r_[1.0, np.cumprod(1 + steps)]
    ts = np.arange(len(eq), dtype=np.int64) * HOUR
    dd = drawdown(eq, ts)
    mdd, start, end, recovered = _loop_drawdown(eq.tolist())
    assert dd["max_drawdown"] == pytest.approx(mdd, rel=1e-12)
    assert (dd["bars"], dd["recovered"]) == (end - start, float(recovered))
    assert dd["days"] == pytest.approx((end - start) / 24)


def test_ranks_match_scipy_on_values_that_differ_in_their_last_bits() -> None:
    """rankdata sorts keys whose low bits hold the index: values equal but for those bits must still be
    ordered by value, exact ties averaged, -0.0 equal to 0.0, NaN handled as scipy's argsort fallback."""
    from scipy import stats

    from cryptonorm.evaluate.forecast import rankdata

    rng = np.random.default_rng(4)
    near_one = 1.0 + rng.integers(-40, 40, 3000) * np.finfo(float).eps  # many distinct values, few high bits
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1e308, -1e308, 1.0, 1.0])
    for x in (near_one, -near_one, np.r_[near_one, -near_one, specials], rng.normal(size=5000).round(2),
              np.r_[rng.normal(size=4000), specials], specials):
        np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    with_nan = np.array([0.3, np.nan, 0.1, 0.3])
    got = rankdata(with_nan)
    np.testing.assert_array_equal(got, [2.5, 4.0, 1.0, 2.5])  # NaN last, as np.argsort puts it


@pytest.mark.parametrize("threads", [1, 2])
def test_forecast_metrics_on_either_thread_match_scipy(threads: int) -> None:
    """The forecast metrics run beside the simulation with threads=2, inline with 1: the same numbers."""
    from scipy import stats

    ts, close = _walk(4000, seed=8)
    fc = np.random.default_rng(8).normal(0.0, 1e-3, 4000)
    m = simulate(ts, close, fc, _cfg(), "1h", "return", threads=threads).metrics["forecast"]
    nxt = np.log(close[1:] / close[:-1])
    assert m["n"] == 3999
    assert m["ic_spearman"] == pytest.approx(stats.spearmanr(fc[:-1], nxt)[0], abs=1e-12)
    assert m["ic_pearson"] == pytest.approx(stats.pearsonr(fc[:-1], nxt)[0], abs=1e-12)
    assert m["directional_accuracy"] == pytest.approx(np.mean(np.sign(fc[:-1]) == np.sign(nxt)), abs=1e-12)


def test_fees_paid_of_a_wiped_out_equity_match_an_exact_sum() -> None:
    """An equity that halves every bar goes subnormal after ~1,022 bars; the fees sum skips those terms."""
    n = 1500
    r = np.full(n, -0.5)
    fees = np.full(n, 1e-3)
    eq = np.r_[1.0, np.cumprod(1 + r)]
    assert 0 < eq[1050] < np.finfo(float).tiny  # subnormal
    want = math.fsum(float(f) * float(e) for f, e in zip(fees, eq[:-1], strict=True))
    assert performance(r, np.ones(n), "1h", fees)["fees_paid"] == pytest.approx(want, rel=1e-14)
    late = np.r_[np.zeros(1030), fees[:470]]  # every fee charged on a subnormal equity: the tiny sum, not 0
    want = math.fsum(float(f) * float(e) for f, e in zip(late, eq[:-1], strict=True))
    assert 0 < performance(r, np.ones(n), "1h", late)["fees_paid"] == pytest.approx(want, rel=1e-6)
