"""Perpetual swaps: candles and funding rates through real ccxt against the loopback Binance USD-M API,
funding charged in the backtest, funding features known only after their funding time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_exchange import FakeBinance, RunningServer, exchange_options, real_candles, serving
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import build_config
from cryptonorm.data.exchange import Retry
from cryptonorm.data.funding import funding_path, read_funding_file
from cryptonorm.data.store import FUNDING, read_store, store_path
from cryptonorm.errors import DataError

HOUR = 3_600_000
SWAP = real_candles("BTC_USDT-1h", rows=2_000, end="2024-03-01")  # real candles, served as the perpetual's
SPOT = real_candles("BTC_USDT-1h", rows=2_000, end="2024-03-01")


def funding_series(start: int, end: int, seed: int = 0, outage: bool = True) -> pd.DataFrame:
    """Funding every 8 h at 00/08/16 UTC (Binance USD-M), rates around +0.01% with sign changes; one
    missing funding time (an outage) when `outage`."""
    first = start - start % (8 * HOUR)
    ts = np.arange(first, end + 8 * HOUR, 8 * HOUR, dtype="int64")
    rates = np.round(np.random.default_rng(seed).normal(1e-4, 2e-4, len(ts)), 8)
    keep = np.ones(len(ts), dtype=bool)
    if outage:
        keep[len(ts) // 2] = False
    return pd.DataFrame({"timestamp": ts[keep], "rate": rates[keep]})


RATES = funding_series(int(SWAP["timestamp"].iloc[0]), int(SWAP["timestamp"].iloc[-1]))


@pytest.fixture
def server() -> Iterator[RunningServer]:
    state = FakeBinance(now_ms=int(SWAP["timestamp"].iloc[-1]) + 2 * HOUR)
    state.add_candles("BTCUSDT", "1h", SWAP, market="swap")
    state.add_funding("BTCUSDT", RATES)
    state.add_candles("BTCUSDT", "1h", SPOT.assign(close=SPOT["close"] * 0.999, low=SPOT["low"] * 0.999))
    yield from serving(state)


@pytest.fixture(autouse=True)
def pinned_clock(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import ccxt

    monkeypatch.setattr(ccxt.binance, "milliseconds", staticmethod(lambda: server.state.now()))


def swap_data(server: RunningServer, tmp_path: Path, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"exchange": "binance", "symbol": "BTC/USDT", "market": "swap", "timeframe": "1h",
                         "dir": str(tmp_path / "store"), "exchange_options": exchange_options(server.url,
                                                                                               market="swap")}
    return d | over


def test_swap_candles_and_funding_land_beside_spot_without_mixing(server: RunningServer, tmp_path: Path,
                                                                  retry: Retry) -> None:
    server.state.inject("429", "500")  # the first klines/funding requests fail and are retried
    (s,) = pipeline.fetch(build_config({"data": swap_data(server, tmp_path)}), retry=retry)
    assert s.symbol == "BTC/USDT:USDT"
    swap_file = store_path(tmp_path / "store", "binance", "BTC/USDT:USDT", "1h")
    assert s.path == swap_file and swap_file.name == "BTC_USDT_USDT-1h.parquet"
    pd.testing.assert_frame_equal(read_store(swap_file), server.state.expected("fapi:BTCUSDT", "1h"))
    assert s.funding is not None and s.funding.path == funding_path(tmp_path / "store", "binance", "BTC/USDT:USDT")
    want = server.state.served_funding("BTCUSDT")
    want = want[want["timestamp"] >= SWAP["timestamp"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_store(s.funding.path, FUNDING), want)
    assert [g.missing for g in s.funding.gaps] == [1]  # the outage is reported, never filled
    assert server.state.unexpected == []
    # spot of the same pair: its own file, its own (different) candles
    spot = {**swap_data(server, tmp_path), "market": "spot", "exchange_options": exchange_options(server.url)}
    (p,) = pipeline.fetch(build_config({"data": spot}), retry=retry)
    assert p.path.name == "BTC_USDT-1h.parquet" and p.funding is None
    assert not read_store(p.path)["close"].equals(read_store(swap_file)["close"])


def test_funding_fetch_is_incremental(server: RunningServer, tmp_path: Path, retry: Retry) -> None:
    cfg = build_config({"data": swap_data(server, tmp_path)})
    pipeline.fetch(cfg, retry=retry)
    first = server.state.counts["fapi/fundingRate"]
    server.state.now_ms = int(SWAP["timestamp"].iloc[-1]) + 2 * HOUR  # nothing new
    (s,) = pipeline.fetch(cfg, retry=retry)
    assert s.funding is not None and s.funding.new_rows == 0
    assert server.state.counts["fapi/fundingRate"] - first <= 1  # one request that finds nothing newer


def test_swap_on_an_exchange_without_swaps_is_one_clear_line(server: RunningServer, tmp_path: Path) -> None:
    spot_only = exchange_options(server.url)  # the exchange as it lists only spot markets
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {}\n")
    import json

    r = CliRunner().invoke(app, ["fetch", "-c", str(cfg), "--set", "data.exchange=binance",
                                 "--set", "data.market=swap", "--set", f"data.dir={tmp_path / 'store'}",
                                 "--set", f"data.exchange_options={json.dumps(spot_only)}"])
    assert r.exit_code == 1
    assert "lists no perpetual swap markets" in r.output and "Traceback" not in r.output


def test_user_funding_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "funding.csv"
    RATES.rename(columns={"timestamp": "fundingTime", "rate": "fundingRate"}).to_csv(path, index=False)
    got = read_funding_file(path)
    pd.testing.assert_frame_equal(got, RATES.reset_index(drop=True))
    with pytest.raises(DataError, match="needs a time column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        read_funding_file(bad)


# ---------------------------------------------------------------- funding in the backtest


def _loop_backtest(ts: np.ndarray, close: np.ndarray, target: np.ndarray, fts: np.ndarray, fr: np.ndarray,
                   fee: float, step: int) -> tuple[np.ndarray, float]:
    """A slow, independent reference: walk the bars, holding over bar t the `target` decided at close t-1;
    a funding time T is paid by whatever position is open at T (opened at a close before T, not yet closed
    at T)."""
    eq, pos, paid = 1.0, 0.0, 0.0
    out = [1.0]
    k = int(np.searchsorted(fts, ts[0] + step, side="right"))  # funding times before the first position
    for t in range(1, len(ts)):
        new = float(target[t - 1])
        r = new * (close[t] / close[t - 1] - 1.0) - abs(new - pos) * fee
        while k < len(fts) and fts[k] <= ts[t] + step:  # funding times while `new` is held
            r -= new * fr[k]
            paid += new * fr[k] * eq
            k += 1
        pos = new
        eq *= 1.0 + r
        out.append(eq)
    return np.array(out), paid


def test_funding_charges_equal_a_plain_loop_on_real_candles() -> None:
    from cryptonorm.config import BacktestConfig
    from cryptonorm.trade.backtest import simulate
    from cryptonorm.trade.funding import funding_per_bar

    c = SWAP.iloc[:600]
    ts, px = c["timestamp"].to_numpy(), c["close"].to_numpy()
    fc = np.sin(np.arange(len(ts)) / 7.0)  # long and short spells
    rates = funding_series(int(ts[0]), int(ts[-1]) + HOUR, seed=3, outage=False)
    fts, fr = rates["timestamp"].to_numpy(), rates["rate"].to_numpy()
    cfg = BacktestConfig(fee_bps=10.0)
    bt = simulate(ts, px, fc, cfg, "1h", "return", funding=funding_per_bar(ts, HOUR, fts, fr))
    want_eq, want_paid = _loop_backtest(ts, px, np.sign(fc), fts, fr, 10e-4, HOUR)
    np.testing.assert_allclose(bt.equity["equity"].to_numpy(), want_eq, rtol=1e-12)
    assert bt.metrics["costs"]["funding_paid"] == pytest.approx(want_paid, rel=1e-9)
    assert sum(r["funding_paid"] for r in bt.metrics["per_year"]) == pytest.approx(want_paid, rel=1e-9)
    # always long pays positive rates: buy-and-hold's funding equals the sum of the rates it sat through
    held = (fts > ts[0] + HOUR) & (fts <= ts[-1] + HOUR)
    assert bt.metrics["costs"]["bh_funding_paid"] > 0 and fr[held].sum() > 0
    spot = simulate(ts, px, fc, cfg, "1h", "return")  # a spot backtest is unchanged: no funding anywhere
    assert "funding" not in spot.equity.columns and "funding_paid" not in spot.metrics["costs"]
    assert spot.metrics["strategy"]["total_return"] != bt.metrics["strategy"]["total_return"]


def test_vol_target_mode_pays_funding_as_a_plain_loop() -> None:
    """backtest.mode vol_target on a swap: the strategy, its trailing-vol baseline and buy-and-hold pay the
    funding of what they hold, as the bar-by-bar loop does with the same positions."""
    from cryptonorm.config import BacktestConfig
    from cryptonorm.trade.funding import funding_per_bar
    from cryptonorm.trade.vol_target import simulate_vol_target

    c = SWAP.iloc[:600]
    ts, px = c["timestamp"].to_numpy(), c["close"].to_numpy()
    fvar = (0.5 + 0.4 * np.sin(np.arange(len(ts)) / 9.0)) * 1e-4  # per-bar variance forecasts
    fvar[:5] = np.nan  # no forecast yet: flat
    rates = funding_series(int(ts[0]), int(ts[-1]) + HOUR, seed=4, outage=False)
    fts, fr = rates["timestamp"].to_numpy(), rates["rate"].to_numpy()
    cfg = BacktestConfig(fee_bps=10.0, target_vol=0.3, max_leverage=2.0)
    carry = funding_per_bar(ts, HOUR, fts, fr)
    bt = simulate_vol_target(ts, px, fvar, cfg, "1h", funding=carry)
    target = np.nan_to_num(np.minimum(0.3 / np.sqrt(fvar * 8760.0), 2.0))
    want_eq, want_paid = _loop_backtest(ts, px, target, fts, fr, 10e-4, HOUR)
    np.testing.assert_allclose(bt.equity["equity"].to_numpy(), want_eq, rtol=1e-12)
    assert bt.metrics["costs"]["funding_paid"] == pytest.approx(want_paid, rel=1e-9)
    assert sum(r["funding_paid"] for r in bt.metrics["per_year"]) == pytest.approx(want_paid, rel=1e-9)
    bh_eq, bh_paid = _loop_backtest(ts, px, np.ones(len(ts)), fts, fr, 10e-4, HOUR)
    np.testing.assert_allclose(bt.equity["bh_equity"].to_numpy(), bh_eq, rtol=1e-12)
    assert bt.metrics["costs"]["bh_funding_paid"] == pytest.approx(bh_paid, rel=1e-9)
    np.testing.assert_allclose(bt.equity["funding"].to_numpy(), bt.equity["position"].to_numpy() * carry)
    spot = simulate_vol_target(ts, px, fvar, cfg, "1h")  # without funding: none charged, none reported
    assert "funding" not in spot.equity.columns and "funding_paid" not in spot.metrics["costs"]
    assert spot.metrics["baselines"]["trailing_vol"]["total_return"] != \
        bt.metrics["baselines"]["trailing_vol"]["total_return"]


def test_funding_that_does_not_cover_the_backtest_says_how_much_is_missing() -> None:
    from cryptonorm.trade.funding import funding_per_bar

    ts = SWAP["timestamp"].to_numpy()[:400]
    rates = funding_series(int(ts[0]), int(ts[-1]), outage=False)
    late = rates.iloc[10:]  # 10 funding times dropped; the first one (16:00) was before the first position
    with pytest.raises(DataError, match=r" 9 funding time\(s\) missing at the start .*backtest.funding: off"):
        funding_per_bar(ts, HOUR, late["timestamp"].to_numpy(), late["rate"].to_numpy())
    with pytest.raises(DataError, match="no funding rates"):
        funding_per_bar(ts, HOUR, np.zeros(0), np.zeros(0))


# ---------------------------------------------------------------- funding features


def _swap_cfg() -> Any:
    return build_config({"data": {"timeframe": "1h"}, "features": {"window": 8, "sma": [10], "ema": [12],
                                                                  "rsi": [14], "funding": [3, 6]},
                         "split": {"train": 0.6, "val": 0.2, "test": 0.2}})


def test_funding_features_use_only_rates_known_at_the_close() -> None:
    from cryptonorm.features.funding import funding_features

    c = SWAP.iloc[:300]
    ts = c["timestamp"].to_numpy()
    f = funding_features(ts, HOUR, RATES, [3])
    fts, fr = RATES["timestamp"].to_numpy(), RATES["rate"].to_numpy()
    for t in (40, 41, 47, 48, 200):  # a plain scan of what was published before the close of bar t
        known = fr[fts < ts[t] + HOUR]
        assert f["funding_rate"][t] == known[-1]
        assert f["funding_mean_3"][t] == pytest.approx(known[-3:].mean(), rel=1e-12)
        assert f["funding_z_3"][t] == pytest.approx((known[-1] - known[-3:].mean()) / known[-3:].std(), rel=1e-9)


def test_audit_proves_funding_features_leak_free_and_catches_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptonorm.features import audit as audit_mod
    from cryptonorm.features import dataset, funding

    cfg = _swap_cfg()
    candles = SWAP.iloc[:700].reset_index(drop=True)
    report = audit_mod.audit(candles, cfg, funding=RATES)
    assert report.ok and "funding_rate" in dataset.prepare(candles, cfg, RATES).feature_names
    real = funding.funding_features

    def peeking(ts: np.ndarray, step: int, fr: pd.DataFrame, periods: list[int]) -> dict[str, np.ndarray]:
        return real(ts + 8 * HOUR, step, fr, periods)  # uses the next funding rate before it is known

    monkeypatch.setattr(dataset, "funding_features", peeking)
    leaky = audit_mod.audit(candles, cfg, funding=RATES)
    assert not leaky.ok and any(leak.name.startswith("funding_") for leak in leaky.leaks)


def test_export_freqtrade_writes_swap_candles_and_funding(server: RunningServer, tmp_path: Path,
                                                          retry: Retry) -> None:
    from cryptonorm.pipeline.export import export_freqtrade

    cfg = build_config({"data": swap_data(server, tmp_path)})
    pipeline.fetch(cfg, retry=retry)
    files = export_freqtrade(cfg, tmp_path / "ft")
    names = sorted(p.relative_to(tmp_path / "ft").as_posix() for p in files)
    assert names == ["futures/BTC_USDT_USDT-1h-futures.feather", "futures/BTC_USDT_USDT-8h-funding_rate.feather"]
    rates = read_funding_file(tmp_path / "ft" / names[1])  # freqtrade's funding file: the rate in `open`
    pd.testing.assert_frame_equal(rates, read_store(funding_path(tmp_path / "store", "binance", "BTC/USDT:USDT"),
                                                    FUNDING))


def test_swap_run_end_to_end_through_the_cli(server: RunningServer, tmp_path: Path) -> None:
    """fetch -> train (funding features) -> backtest (funding charged) -> audit, all through the CLI."""
    import json

    import yaml

    cfg = tmp_path / "swap.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "swap", "data": swap_data(server, tmp_path),
        "features": {"window": 8, "sma": [10], "ema": [12], "rsi": [14], "funding": [3]},
        "model": {"hidden": [8]}, "train": {"epochs": 1, "batch_size": 128},
    }))
    runner = CliRunner()
    assert runner.invoke(app, ["-q", "fetch", "-c", str(cfg)]).exit_code == 0
    r = runner.invoke(app, ["-q", "run", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    scaler = json.loads((run / "scaler.json").read_text())
    assert {"funding_rate", "funding_mean_3", "funding_z_3"} <= set(scaler["features"])
    metrics = json.loads((run / "backtest" / "metrics.json").read_text())
    assert metrics["costs"]["funding_paid"] != 0.0
    equity = pd.read_csv(run / "backtest" / "equity.csv")
    assert "funding" in equity.columns
    assert metrics["costs"]["funding_paid"] == pytest.approx(
        float((equity["funding"] * equity["equity"].shift(1, fill_value=1.0)).sum()), rel=1e-9)
    audit = runner.invoke(app, ["audit", str(cfg)])
    assert audit.exit_code == 0, audit.output
    off = runner.invoke(app, ["-q", "run", str(cfg), "--out", str(tmp_path / "run2"), "--json",
                              "--set", "backtest.funding=off"])
    assert off.exit_code == 0, off.output
    assert "funding_paid" not in json.loads((tmp_path / "run2" / "backtest" / "metrics.json").read_text())["costs"]
    vol = runner.invoke(app, ["-q", "run", str(cfg), "--out", str(tmp_path / "vol"), "--json",
                              "--set", "target.kind=volatility", "--set", "features.volatility=[6]"])
    assert vol.exit_code == 0, vol.output  # backtest.mode auto = vol_target: funding charged there too
    vm = json.loads((tmp_path / "vol" / "backtest" / "metrics.json").read_text())
    assert vm["mode"] == "vol_target" and vm["costs"]["funding_paid"] != 0.0 and vm["costs"]["bh_funding_paid"] != 0.0
