"""Config section of a universe of coins (`data.universe`): one model across many markets.

    data:
      timeframe: 1h
      universe:
        symbols: [BTC/USDT, ETH/USDT, SOL/USDT]
        files_dir: ../shared/data/panel          # or files: {BTC/USDT: btc.csv, ...}; or neither: the store
        pattern: "{base}_{quote}-{timeframe}.csv.gz"

With `data.exchange: synthetic` and `universe.synthetic` set, the coins come from the offline synthetic
universe (data/synthetic_universe.py) and `symbols` may be left empty (they are named C00/USDT, C01/USDT...).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cryptonorm.config.data import Section

PATTERN_FIELDS = ("base", "quote", "settle", "timeframe", "symbol")  # what a files pattern may name
MIN_CROSS_SECTION = 3  # coins a cross-sectional target or norm needs at least
UNIVERSE_TARGETS = ("excess_return", "rank")  # target kinds defined across coins (features/cross_section.py)


class SyntheticUniverseConfig(Section):
    """An offline universe: market factor with volatility regimes, sectors, idiosyncratic noise, listings,
    delistings and a planted cross-sectional signal of known strength (0 = the honest null)."""

    seed: int = 0  # same seed, same universe
    coins: int = Field(12, ge=1, le=500)  # coins ever listed
    sectors: int = Field(3, ge=1)  # sector factors; coin i belongs to sector i % sectors
    start: str = "2021-01-01"  # first bar of the universe
    days: int = Field(540, ge=10)  # length of the universe in days
    signal: float = Field(0.0, ge=0.0, lt=1.0)  # weight of each coin's hidden idiosyncratic trend in its next return
    signal_persistence: float = Field(0.97, ge=0.0, lt=1.0)  # AR(1) coefficient of that trend (per bar)
    annual_vol: float = Field(0.8, gt=0)  # annualized volatility of a coin's return
    market_share: float = Field(0.5, ge=0.0, le=1.0)  # share of a coin's variance from the market factor
    sector_share: float = Field(0.2, ge=0.0, le=1.0)  # ... from its sector factor (the rest is idiosyncratic)
    tail_df: float = Field(4.0, gt=2.0)  # Student-t degrees of freedom of all shocks
    regime_days: float = Field(60.0, gt=0)  # mean length of a market volatility regime
    listed: float = Field(0.3, ge=0.0, le=1.0)  # share of coins listed after the start (at a random date)
    delisted: float = Field(0.2, ge=0.0, le=1.0)  # share of coins delisted before the end (at a random date)

    @model_validator(mode="after")
    def _shares(self) -> SyntheticUniverseConfig:
        if self.market_share + self.sector_share > 1.0:
            raise ValueError(f"market_share + sector_share = {self.market_share + self.sector_share:g} > 1; "
                             "they are shares of one coin's variance")
        return self


class UniverseConfig(Section):
    """The coins one model trains on and trades (`data.universe`)."""

    symbols: list[str] = Field(default_factory=list)  # ccxt symbols, one quote currency; empty: synthetic's coins
    files: dict[str, str] | None = None  # SYMBOL -> its local candle file (CSV/parquet/freqtrade)
    files_dir: str | None = None  # a folder of candle files named by `pattern`
    pattern: str = "{base}_{quote}-{timeframe}.csv.gz"  # file name in files_dir: {base} {quote} {settle} {timeframe}
    funding_dir: str | None = None  # data.market swap: a folder of funding files named by funding_pattern
    funding_pattern: str = "{base}_{quote}_{settle}-funding.csv.gz"
    synthetic: SyntheticUniverseConfig | None = None  # data.exchange synthetic: the offline universe

    def coin_symbols(self) -> list[str]:
        """The universe's symbols: as listed, or the synthetic universe's C00/USDT, C01/USDT, ..."""
        if self.symbols or self.synthetic is None:
            return list(self.symbols)
        return [f"C{i:02d}/USDT" for i in range(self.synthetic.coins)]

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for s in v:
            if "/" not in s:
                raise ValueError(f"got {s!r}; a ccxt symbol looks like BASE/QUOTE, e.g. BTC/USDT")
            if s in seen:
                raise ValueError(f"{s} is listed twice; list each coin once")
            seen.add(s)
        quotes = {s.split("/")[1].split(":")[0] for s in v}
        if len(quotes) > 1:
            first = v[0].split("/")[1].split(":")[0]
            odd = next(s for s in v if s.split("/")[1].split(":")[0] != first)
            raise ValueError(f"{odd} is quoted in another currency than {v[0]} ({sorted(quotes)}); one universe "
                             "has one quote currency: drop the coin or convert its prices")
        return v

    @field_validator("pattern", "funding_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        bad = [f for f in names if f not in PATTERN_FIELDS]
        if bad:
            allowed = ', '.join('{' + f + '}' for f in PATTERN_FIELDS)
            raise ValueError(f"{v!r} names {{{bad[0]}}}; a pattern may use {allowed}")
        return v

    @model_validator(mode="after")
    def _sources(self) -> UniverseConfig:
        if self.files is not None and self.files_dir is not None:
            raise ValueError("files and files_dir both name the candles; keep one")
        if self.files is not None:
            extra = [s for s in self.files if s not in self.symbols]
            if extra:
                raise ValueError(f"files names {extra[0]}, which is not in symbols; add it there or remove its file")
            lacking = [s for s in self.symbols if s not in self.files]
            if lacking:
                raise ValueError(f"{lacking[0]} has no entry in files; give its file or use files_dir")
        if not self.symbols and self.synthetic is None:
            raise ValueError("symbols is empty; list the coins, e.g. [BTC/USDT, ETH/USDT, SOL/USDT]")
        return self


class PortfolioConfig(Section):
    """A portfolio across the universe's coins (`backtest.portfolio`), rebalanced from the forecasts.

    long_short: long the top `quantile` (or `k`) of the coins by forecast, short the bottom one; long_only:
    the top leg alone; top_k: the `k` coins with the largest |forecast|, each on its forecast's side."""

    kind: Literal["long_short", "long_only", "top_k"] = "long_short"
    quantile: float = Field(0.2, gt=0.0, le=0.5)  # share of the coins trading at t in each leg
    k: int | None = Field(None, ge=1)  # coins per leg (top_k: in the book) instead of quantile
    weights: Literal["equal", "forecast"] = "equal"  # forecast: in proportion to |forecast - cross-sectional mean|
    dollar_neutral: bool = True  # long_short: the long and the short leg each hold gross / 2
    gross: float = Field(1.0, gt=0.0)  # gross leverage: sum of |weights| (a cap: a leg may hold less)
    rebalance: int = Field(1, ge=1)  # bars between rebalances; weights are held in between
    fee_bps: dict[str, float] = Field(default_factory=dict)  # per-coin fee (bps per side) instead of backtest.fee_bps

    @model_validator(mode="after")
    def _k(self) -> PortfolioConfig:
        if self.kind == "top_k" and self.k is None:
            raise ValueError("kind top_k needs k (the coins in the book)")
        return self
