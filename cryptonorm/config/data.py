"""Config sections for where candles come from: `data` and the synthetic market (`data.synthetic`)."""

from __future__ import annotations

import re
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cryptonorm.timeframes import TIMEFRAME_RE, parse_date

# Keys that would put a secret in a file. Secrets come only from the environment (see exchange.py).
SECRET_KEYS = frozenset({"apikey", "secret", "password", "privatekey", "uid", "token", "walletaddress"})

# ...and parts of names that mark one anywhere in exchange_options, nested or as an HTTP header
# (`headers: {X-MBX-APIKEY: ...}` authenticates as well as `apiKey` does)
SECRET_PARTS = ("apikey", "secret", "password", "passphrase", "privatekey", "twofa")



def _secret_key(obj: Any, seen: set[int] | None = None) -> str | None:
    """The first key of a (nested) mapping that names a credential, or None."""
    seen = set() if seen is None else seen
    if id(obj) in seen:  # YAML aliases share nodes: visit each once
        return None
    seen.add(id(obj))
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if isinstance(key, str):
            norm = re.sub(r"[^a-z0-9]", "", key.lower())
            if norm in SECRET_KEYS or any(part in norm for part in SECRET_PARTS):
                return key
        found = _secret_key(value, seen)
        if found is not None:
            return found
    return None


def iso_date(v: Any) -> str | None:
    """Keep dates as ISO strings (YAML parses 2024-01-01 as a date); check they parse."""
    if v is None:
        return None
    parse_date(str(v))  # raises ValueError with a clear message
    return str(v)


INT_LIMIT = 2**63 - 1  # no integer of a config may exceed int64 (torch, numpy and parquet all store int64)


def _allows_bool(annotation: Any) -> bool:
    """True when a field's type takes a bool (bool itself, a union with bool, or Any)."""
    if annotation is bool or annotation is Any:
        return True
    return get_origin(annotation) in (Union, type(int | None)) and any(_allows_bool(a) for a in get_args(annotation))


def _item_types(annotation: Any, n: int) -> list[Any]:
    """The types of the n items of a list or tuple field (`list[int]`, `tuple[int, float]`, `X | None`)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else (annotation,)
    for option in options:
        args = get_args(option)
        if get_origin(option) is list and args:
            return [args[0]] * n
        if get_origin(option) is tuple and args:
            return [args[0]] * n if len(args) == 2 and args[1] is Ellipsis else list(args)
    return [Any] * n


def _strict_problem(annotation: Any, value: Any) -> str | None:
    """Why `value` cannot stand for `annotation` although pydantic's lax mode would take it: a bool where a
    number is expected (`epochs: true` would train one epoch), an integer beyond int64, a single value for a
    section. Lists and tuples are checked element by element."""
    if isinstance(value, bool):
        return None if _allows_bool(annotation) else f"got {str(value).lower()}, a boolean; give a number"
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        return f"got {value}, beyond the largest integer allowed ({INT_LIMIT:,}); give a smaller number"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and value is not None \
            and not isinstance(value, (dict, BaseModel)):
        first = next(iter(annotation.model_fields), "key")
        return f"is a section, not a single value (got {value!r}); set a key inside it (e.g. its {first!r})"
    if isinstance(value, (list, tuple)):
        for item, item_type in zip(value, _item_types(annotation, len(value)), strict=True):
            problem = _strict_problem(item_type, item)
            if problem is not None:
                return problem
    return None


class Section(BaseModel):
    # allow_inf_nan=False: no float parameter of an experiment means anything as inf or NaN (`--set
    # train.lr=.inf` would train on garbage); reject it here, naming the key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        problem = None if field is None else _strict_problem(field.annotation, v)
        if problem is not None:
            raise ValueError(problem)
        return v


from cryptonorm.config.universe import UniverseConfig  # noqa: E402  (it builds on Section)


class SyntheticConfig(Section):
    """Parameters of the offline market (`data.exchange: synthetic`)."""

    seed: int = Field(0, ge=0, le=2**32 - 1)  # the market's own seed: same seed, same candles
    signal: float = Field(0.0, ge=0.0, lt=1.0)  # planted predictability: weight of a hidden trend; 0 = no edge
    signal_persistence: float = Field(0.97, ge=0.0, lt=1.0)  # AR(1) coefficient of that trend (per bar)
    start: str = "2020-01-01"  # first candle of the market (its "listing date")
    price: float = Field(20_000.0, gt=0)  # first open
    annual_vol: float = Field(0.6, gt=0)  # long-run annualized volatility of log returns
    drift: float = 0.0  # annualized drift of log returns
    tail_df: float = Field(4.0, gt=2.0)  # Student-t degrees of freedom of the shocks (fat tails)
    vol_persistence: float = Field(0.995, ge=0.0, lt=1.0)  # AR(1) coefficient of log-volatility (per bar)
    vol_of_vol: float = Field(0.05, ge=0.0)  # std of log-volatility shocks (per bar)
    seasonality: float = Field(0.3, ge=0.0, lt=1.0)  # intraday amplitude of volatility and volume
    regime_days: float = Field(90.0, gt=0)  # mean length of a volatility/drift regime, in days
    volume: float = Field(1_000.0, gt=0)  # mean volume per hour, in the base asset


class DataConfig(Section):
    """Where candles come from and where they are stored."""

    exchange: str = "synthetic"  # any ccxt exchange id, or "synthetic" (offline)
    symbol: str | list[str] = "BTC/USDT"  # one market or a list (fetch); train/backtest use one
    timeframe: str = "1h"  # any ccxt timeframe: 1m, 5m, 1h, 4h, 1d, ...
    since: str | None = None  # ISO date of the first candle; None = the market's first candle
    until: str | None = None  # ISO date (exclusive); None = up to the last closed candle
    dir: str = "data"  # candle store: DIR/<exchange>/<BASE_QUOTE>-<timeframe>.parquet
    file: str | None = None  # a local CSV/parquet (or freqtrade .feather/.json) of OHLCV candles instead of the store
    freqtrade_dir: str | None = None  # freqtrade's user_data/data/<exchange>/: its file for symbol+timeframe is read
    market: Literal["spot", "swap"] = "spot"  # swap: the perpetual (ccxt symbol BASE/QUOTE:SETTLE), with funding
    funding_file: str | None = None  # your own funding rates (CSV/parquet: timestamp, rate) instead of fetching
    exchange_options: dict[str, Any] = Field(default_factory=dict)  # passed to the ccxt constructor
    # strftime format of the timestamps of data.file / data.funding_file when they are text (e.g. "%d/%m/%Y
    # %H:%M"); None = ISO 8601 or epoch numbers. Dates such as 03/04/2024 are refused without it (day or month?)
    time_format: str | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    # the universe (issue 28): many coins, one model; its own section, config/universe.py
    universe: UniverseConfig | None = None

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_]*$", v):
            raise ValueError(f"got {v!r}; use a ccxt exchange id such as binance, kraken, okx, or 'synthetic'")
        return v

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        if not TIMEFRAME_RE.match(v):
            raise ValueError(f"got {v!r}; expected a ccxt timeframe such as 1m, 15m, 1h, 4h, 1d, 1w")
        return v

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str | list[str]) -> str | list[str]:
        symbols = [v] if isinstance(v, str) else v
        if not symbols:
            raise ValueError("give at least one symbol, e.g. BTC/USDT")
        for s in symbols:
            if not re.match(r"^[A-Za-z0-9.\-]+/[A-Za-z0-9.\-]+(:[A-Za-z0-9.\-]+)?$", s):
                raise ValueError(f"got {s!r}; a ccxt symbol looks like BASE/QUOTE, e.g. BTC/USDT")
        return v

    @field_validator("since", "until", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        return iso_date(v)

    @field_validator("exchange_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        key = _secret_key(v)
        if key is not None:
            raise ValueError(
                f"{key!r} is a secret and must not be written in a config; set it in the environment "
                "as CRYPTONORM_<EXCHANGE>_API_KEY / _SECRET / _PASSWORD instead"
            )
        return v

    @field_validator("exchange_options")
    @classmethod
    def _option_types(cls, v: dict[str, Any]) -> dict[str, Any]:
        # ccxt merges these into the exchange's own settings: a wrong type there surfaces much later as a
        # misleading message (`urls: 5` reads as "the exchange has no sandbox URL")
        for key in ("urls", "options", "headers", "api"):
            if key in v and not isinstance(v[key], dict):
                raise ValueError(f"{key} must be a mapping (ccxt merges it into the exchange's "
                                 f"{key}), got {v[key]!r}")
        for key in ("timeout", "rateLimit"):
            if key in v and (isinstance(v[key], bool) or not isinstance(v[key], (int, float)) or v[key] <= 0):
                raise ValueError(f"{key} must be a positive number of milliseconds, got {v[key]!r}")
        return v

    @field_validator("time_format")
    @classmethod
    def _time_format(cls, v: str | None) -> str | None:
        if v is not None and "%" not in v:
            raise ValueError(f"got {v!r}; give a strftime format such as '%d/%m/%Y %H:%M' (day/month/year)")
        return v

    @model_validator(mode="after")
    def _range(self) -> DataConfig:
        if self.since and self.until:
            if parse_date(self.since) >= parse_date(self.until):
                raise ValueError(f"data.since ({self.since}) must be before data.until ({self.until})")
        return self

    @model_validator(mode="after")
    def _sources(self) -> DataConfig:
        if self.file and self.freqtrade_dir:
            raise ValueError("data.file and data.freqtrade_dir both name the candles; keep one")
        for s in self.symbols:
            if ":" in s and self.market == "spot":
                raise ValueError(f"data.symbol {s!r} is a derivatives symbol (BASE/QUOTE:SETTLE); set data.market: "
                                 "swap, or use BASE/QUOTE for spot")
        if self.funding_file and self.market != "swap":
            raise ValueError("data.funding_file applies to data.market: swap (spot positions pay no funding)")
        if self.market == "swap" and self.exchange == "synthetic" and not (self.file or self.freqtrade_dir):
            raise ValueError("data.market: swap needs a real exchange (the synthetic market is spot only); "
                             "set data.exchange, or bring candles and data.funding_file")
        return self

    @model_validator(mode="after")
    def _universe(self) -> DataConfig:
        u = self.universe
        if u is None:
            return self
        if u.synthetic is not None and self.exchange != "synthetic":
            raise ValueError("data.universe.synthetic is the offline universe; set data.exchange: synthetic, "
                             "or remove data.universe.synthetic to read real coins")
        if self.exchange == "synthetic" and u.synthetic is None and u.files is None and u.files_dir is None:
            raise ValueError("data.universe on data.exchange synthetic needs data.universe.synthetic (the offline "
                             "universe), or data.universe.files / files_dir for your own candles")
        if self.file or self.freqtrade_dir:
            raise ValueError("data.file / data.freqtrade_dir name one coin's candles; with data.universe use "
                             "data.universe.files or data.universe.files_dir")
        return self

    @property
    def symbols(self) -> list[str]:
        """The markets as ccxt names them: with data.market swap, BTC/USDT becomes the linear perpetual
        BTC/USDT:USDT (settled in the quote currency). With data.universe, its coins."""
        raw = [self.symbol] if isinstance(self.symbol, str) else list(self.symbol)
        if self.universe is not None:
            raw = self.universe.coin_symbols()
        if self.market == "swap":
            return [s if ":" in s else f"{s}:{s.split('/')[1]}" for s in raw]
        return raw
