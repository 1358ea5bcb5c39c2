"""A universe of coins: loading, alignment, no survivorship or cross-coin look-ahead, the synthetic universe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cryptonorm.cli.app import app
from cryptonorm.config import build_config
from cryptonorm.data.universe import load_universe
from cryptonorm.errors import ConfigError
from cryptonorm.evaluate import ic
from cryptonorm.features import cross_section as cs
from cryptonorm.features.audit import audit_panel
from cryptonorm.features.dataset import min_bars
from cryptonorm.features.panel import prepare_panel

PANEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "panel"
PERP = "{base}_{quote}_{settle}-{timeframe}-futures.csv.gz"
runner = CliRunner()


def _synthetic(signal: float = 0.0, seed: int = 0, days: int = 60, coins: int = 8, **extra: object) -> dict:
    raw: dict = {"data": {"exchange": "synthetic", "universe": {"synthetic": {
        "coins": coins, "days": days, "signal": signal, "seed": seed, "listed": 0.4, "delisted": 0.3}}},
        "features": {"window": 8}}
    for key, value in extra.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


def test_synthetic_universe_is_bit_stable_with_listings_and_delistings() -> None:
    u = load_universe(build_config(_synthetic(seed=3)))
    h = hashlib.sha256()
    for s in u.symbols:
        h.update(u.candles[s][["timestamp", "open", "high", "low", "close", "volume"]].to_numpy("float64").tobytes())
    assert h.hexdigest()[:16] == "d2bd10199bdc3c43"
    present = u.present()
    assert not present[0].all() and not present[-1].all()  # some coins list later, some are gone
    for c in range(len(u.symbols)):  # each coin trades over one contiguous life
        idx = np.flatnonzero(present[:, c])
        assert (np.diff(idx) == 1).all()


def test_coin_joins_after_its_warmup_and_leaves_at_its_last_bar() -> None:
    cfg = build_config(_synthetic(seed=3, features__cross_section="zscore", target__kind="excess_return"))
    u = load_universe(cfg)
    p = prepare_panel(u, cfg)
    warm = min_bars(cfg) - cfg.target.horizon  # rows before a coin's first sample
    for c in range(len(u.symbols)):
        life = np.flatnonzero(u.present()[:, c])
        first, last = life[0], life[-1]
        assert not p.valid[:first + warm - 1, c].any()
        assert not p.valid[last - cfg.target.horizon + 1:, c].any()
        assert p.valid[first + warm + 40, c]
        assert np.isnan(p.features[:first, c]).all() and np.isnan(p.features[last + 1:, c]).all()
    # the cross-sectional z-scores at t are over the coins usable at t only
    z = p.features[:, :, p.feature_names.index("logret_1")]
    live = p.inputs_valid.sum(axis=1) >= 3
    np.testing.assert_allclose(np.nanmean(z[live], axis=1), 0.0, atol=1e-5)


@pytest.mark.parametrize(("mode", "kind"), [("zscore", "excess_return"), ("rank", "rank"), ("none", "return")])
def test_audit_finds_no_coin_reading_another_coins_future(mode: str, kind: str) -> None:
    cfg = build_config(_synthetic(seed=1, features__cross_section=mode, target__kind=kind))
    report = audit_panel(load_universe(cfg), cfg, 3)
    assert report.ok, report.lines()


def test_audit_catches_a_feature_that_reads_the_next_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cs.universe_features

    def peeking(last_return: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = real(last_return, mask)
        out[:-1] = out[1:]  # the cross-sectional mean of the NEXT bar
        return out

    monkeypatch.setattr(cs, "universe_features", peeking)
    cfg = build_config(_synthetic(seed=1))
    report = audit_panel(load_universe(cfg), cfg, 3)
    assert not report.ok and any(name.endswith("cs_mean_return") for name in report.names)


def test_planted_signal_found_and_null_honest() -> None:
    """The momentum of past excess returns has a Newey-West-significant IC on the planted universe only."""
    def t_stat(signal: float, seed: int) -> float:
        u = load_universe(build_config(_synthetic(signal, seed, days=180, coins=12)))
        close = u.on_grid("close")
        r = np.full(close.shape, np.nan)
        r[1:] = np.log(close[1:] / close[:-1])
        ex = cs.target(r, "excess_return")
        cum = np.cumsum(np.nan_to_num(ex), axis=0)
        mom = np.full(r.shape, np.nan)
        mom[24:] = cum[24:] - cum[:-24]  # the last 24 bars' excess return: past only
        mom[~np.isfinite(ex)] = np.nan
        nxt = np.full(r.shape, np.nan)
        nxt[:-1] = ex[1:]
        return ic.summarize(mom, nxt).t_nw

    assert t_stat(0.2, 0) > 5 and t_stat(0.2, 1) > 5
    for seed in (0, 1, 2):
        assert abs(t_stat(0.0, seed)) < 3


def _files_cfg(tmp_path: Path, symbols: list[str], **universe: object) -> dict:
    return {"data": {"exchange": "binance", "timeframe": "1h", "since": "2024-01-01", "until": "2024-03-01",
                     "dir": str(tmp_path / "store"),
                     "universe": {"symbols": symbols, "files_dir": str(PANEL), **universe}},
            "features": {"window": 8}}


@pytest.mark.skipif(not PANEL.is_dir(), reason="the shared panel data is not here")
def test_real_panel_files_and_perpetual_funding(tmp_path: Path) -> None:
    cfg = build_config(_files_cfg(tmp_path, ["BTC/USDT", "ETH/USDT", "SOL/USDT"]))
    u = load_universe(cfg)
    assert u.present().all() and len(u.timestamps) == 60 * 24
    btc = pd.read_csv(PANEL / "BTC_USDT-1h.csv.gz")
    row = btc[btc["timestamp"] == int(u.timestamps[5])]
    assert u.on_grid("close")[5, 0] == pytest.approx(float(row["close"].iloc[0]))
    raw = _files_cfg(tmp_path, ["BTC/USDT", "ETH/USDT"], pattern=PERP, funding_dir=str(PANEL))
    raw["data"]["market"] = "swap"
    pu = load_universe(build_config(raw))
    assert pu.symbols == ["BTC/USDT:USDT", "ETH/USDT:USDT"] and all(len(f) > 100 for f in pu.funding.values())


def _cli_error(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["audit", str(path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "ConfigError" not in res.output
    return " ".join(res.output.split())  # rich wraps long lines


@pytest.mark.skipif(not PANEL.is_dir(), reason="the shared panel data is not here")
def test_bad_universes_are_one_clear_line_naming_the_coin_and_key(tmp_path: Path) -> None:
    out = _cli_error(tmp_path, _files_cfg(tmp_path, ["BTC/USDT", "ETH/BTC", "SOL/USDT"]))
    assert "ETH/BTC" in out and "data.universe.symbols" in out
    raw = _files_cfg(tmp_path, ["BTC/USDT", "ETH/USDT", "ATOM/USDT"])
    del raw["data"]["universe"]["files_dir"]
    raw["data"]["universe"]["files"] = {"BTC/USDT": str(PANEL / "BTC_USDT-1h.csv.gz"),
                                        "ETH/USDT": str(PANEL / "ETH_USDT-1h.csv.gz"),
                                        "ATOM/USDT": str(PANEL / "ATOM_USDT-4h.csv.gz")}
    out = _cli_error(tmp_path, raw)
    assert "ATOM/USDT" in out and "data.timeframe" in out  # a 4h file in a 1h universe
    out = _cli_error(tmp_path, _files_cfg(tmp_path, ["BTC/USDT", "NOPE/USDT", "ETH/USDT"]))
    assert "NOPE/USDT" in out and "data.universe.files_dir" in out
    funding = tmp_path / "funding"  # BTC's and ETH's funding, not SOL's
    funding.mkdir()
    for coin in ("BTC", "ETH"):
        name = f"{coin}_USDT_USDT-funding.csv.gz"
        (funding / name).write_bytes((PANEL / name).read_bytes())
    raw = _files_cfg(tmp_path, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], pattern=PERP, funding_dir=str(funding))
    raw["data"]["market"] = "swap"
    out = _cli_error(tmp_path, raw)
    assert "SOL/USDT:USDT" in out and "data.universe.funding_dir" in out
    raw = _files_cfg(tmp_path, ["BTC/USDT", "ETH/USDT"])
    raw["target"] = {"kind": "excess_return"}
    out = _cli_error(tmp_path, raw)
    assert "target.kind" in out and "3 coins" in out
    raw = {"target": {"kind": "rank"}}
    assert "data.universe" in _cli_error(tmp_path, raw)


def test_universe_keys_need_a_universe() -> None:
    for raw in ({"features": {"cross_section": "zscore"}}, {"backtest": {"portfolio": {"kind": "long_only"}}}):
        with pytest.raises(ConfigError, match="data.universe"):
            build_config(raw)


def test_universe_from_the_store_and_nothing_to_fetch_for_the_synthetic_one(tmp_path: Path) -> None:
    from cryptonorm.data.store import store_path, write_atomic

    coins = load_universe(build_config(_synthetic(seed=4, coins=3))).candles
    for sym, df in coins.items():
        write_atomic(df, store_path(tmp_path, "binance", sym, "1h"))
    cfg = build_config({"data": {"exchange": "binance", "dir": str(tmp_path), "universe": {"symbols": list(coins)}}})
    u = load_universe(cfg)
    for sym in coins:
        pd.testing.assert_frame_equal(u.candles[sym], coins[sym], check_dtype=False)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_synthetic()))
    res = runner.invoke(app, ["fetch", "-c", str(path)])
    assert res.exit_code == 2 and "nothing to fetch" in res.output


def test_fetch_downloads_every_coin_of_the_universe_into_the_store(tmp_path: Path) -> None:
    """Real ccxt against the local fake Binance: `fetch` on a store universe fetches each coin; the
    universe then reads exactly what was served."""
    from fake_exchange import FakeBinance, exchange_options, real_candles, serving

    from cryptonorm import pipeline
    from cryptonorm.data.exchange import Retry

    state = FakeBinance()
    served = {s: real_candles(f"{s.replace('/', '_')}-1h", rows=600, end="2021-10-15")
              for s in ("BTC/USDT", "ETH/USDT")}
    for s, df in served.items():
        state.add_candles(s.replace("/", ""), "1h", df)
    for server in serving(state):
        cfg = build_config({"data": {"exchange": "binance", "timeframe": "1h", "dir": str(tmp_path / "store"),
                                     "since": "2021-09-15", "exchange_options": exchange_options(server.url),
                                     "universe": {"symbols": list(served)}}})
        out = pipeline.fetch(cfg, retry=Retry(sleep=lambda s: None))
        assert [s.symbol for s in out] == list(served)
        u = load_universe(cfg)
        for s in served:
            want = state.expected(s.replace("/", ""), "1h", since=int(u.timestamps[0]))
            pd.testing.assert_frame_equal(u.candles[s], want, check_dtype=False)
