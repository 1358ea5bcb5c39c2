"""The experiment config: typed, closed, with every default visible.

One YAML file per experiment. Unknown keys are errors with a "did you mean"; a wrong value names the
dotted key, what was given and what is allowed. `--set dotted.key=value` overrides are applied to the raw
mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cryptonorm.errors import ConfigError

# Keys that would put a secret in a file. Secrets come only from the environment (see exchange.py).
SECRET_KEYS = frozenset({"apikey", "secret", "password", "privatekey", "uid", "token", "walletaddress"})

# ...and parts of names that mark one anywhere in exchange_options, nested or as an HTTP header
# (`headers: {X-MBX-APIKEY: ...}` authenticates as well as `apiKey` does)
SECRET_PARTS = ("apikey", "secret", "password", "passphrase", "privatekey", "twofa")

TIMEFRAME_RE = re.compile(r"^(\d+)([smhdwMy])$")


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


def _iso_date(v: Any) -> str | None:
    """Keep dates as ISO strings (YAML parses 2024-01-01 as a date); check they parse."""
    if v is None:
        return None
    from cryptonorm.candles import parse_date

    parse_date(str(v))  # raises ValueError with a clear message
    return str(v)


class _Section(BaseModel):
    # allow_inf_nan=False: no float parameter of an experiment means anything as inf or NaN (`--set
    # train.lr=.inf` would train on garbage); reject it here, naming the key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SyntheticConfig(_Section):
    """Parameters of the offline market (`data.exchange: synthetic`)."""

    seed: int = 0  # the market's own seed: same seed, same candles
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


class DataConfig(_Section):
    """Where candles come from and where they are stored."""

    exchange: str = "synthetic"  # any ccxt exchange id, or "synthetic" (offline)
    symbol: str | list[str] = "BTC/USDT"  # one market or a list (fetch); train/backtest use one
    timeframe: str = "1h"  # any ccxt timeframe: 1m, 5m, 1h, 4h, 1d, ...
    since: str | None = None  # ISO date of the first candle; None = the market's first candle
    until: str | None = None  # ISO date (exclusive); None = up to the last closed candle
    dir: str = "data"  # candle store: DIR/<exchange>/<BASE_QUOTE>-<timeframe>.parquet
    file: str | None = None  # a local CSV/parquet of OHLCV candles used instead of the store
    exchange_options: dict[str, Any] = Field(default_factory=dict)  # passed to the ccxt constructor
    synthetic: SyntheticConfig = SyntheticConfig()

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
        return _iso_date(v)

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

    @model_validator(mode="after")
    def _range(self) -> DataConfig:
        if self.since and self.until:
            from cryptonorm.candles import parse_date

            if parse_date(self.since) >= parse_date(self.until):
                raise ValueError(f"data.since ({self.since}) must be before data.until ({self.until})")
        return self

    @property
    def symbols(self) -> list[str]:
        return [self.symbol] if isinstance(self.symbol, str) else list(self.symbol)


class FeaturesConfig(_Section):
    """Technical indicators (raw values follow TA-Lib's definitions), scaling and windows."""

    sma: list[int] = [10, 20, 50]  # simple moving averages -> sma_{n}
    ema: list[int] = [12, 26]  # exponential moving averages -> ema_{n}
    rsi: list[int] = [14]  # Wilder's RSI -> rsi_{n}
    macd: list[tuple[int, int, int]] = [(12, 26, 9)]  # (fast, slow, signal) -> macd_*, macd_signal_*, macd_hist_*
    bbands: list[tuple[int, float]] = [(20, 2.0)]  # (period, k std) -> bb_upper/mid/lower/pctb/width_{n}_{k}
    atr: list[int] = [14]  # Wilder's average true range -> atr_{n}
    returns: list[int] = [1, 2, 4, 8, 24]  # log returns over n bars -> logret_{n}
    volatility: list[int] = [24]  # rolling std of 1-bar log returns -> vol_{n}
    volume_z: list[int] = [24]  # z-score of volume over n bars -> volz_{n}
    price_rel: bool = True  # close / MA - 1 for every sma and ema -> rel_sma_{n}, rel_ema_{n}
    window: int = Field(32, ge=1)  # bars of history per sample (LSTM sequence length; MLP flattens it)
    scaler: Literal["standard", "robust", "minmax", "none"] = "standard"  # fitted on the train split only
    gap_policy: Literal["drop", "ffill"] = "drop"  # drop windows/labels spanning a gap, or ffill + mask
    inputs: Literal["stationary", "all"] = "stationary"  # "stationary" leaves out raw price-level columns

    @field_validator("sma", "ema", "rsi", "atr", "returns", "volatility", "volume_z")
    @classmethod
    def _periods(cls, v: list[int]) -> list[int]:
        if any(p < 1 for p in v):
            raise ValueError(f"periods must be >= 1, got {v}")
        return v

    @field_validator("macd")
    @classmethod
    def _macd(cls, v: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        for fast, slow, signal in v:
            if not (1 <= fast < slow and signal >= 1):
                raise ValueError(f"each entry is [fast, slow, signal] with 1 <= fast < slow, got {v}")
        return v

    @field_validator("bbands")
    @classmethod
    def _bbands(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        for n, k in v:
            if n < 2 or k <= 0:
                raise ValueError(f"each entry is [period >= 2, k > 0], got {v}")
        return v


class TargetConfig(_Section):
    """What the model forecasts."""

    kind: Literal["return", "direction", "volatility"] = "return"
    horizon: int = Field(1, ge=1)  # bars ahead
    loss: Literal["auto", "mse", "huber", "bce"] = "auto"  # auto: huber for regression, bce for direction

    @model_validator(mode="after")
    def _loss(self) -> TargetConfig:
        if self.kind == "direction" and self.loss in ("mse", "huber"):
            raise ValueError("target.loss must be 'bce' or 'auto' when target.kind is 'direction'")
        if self.kind != "direction" and self.loss == "bce":
            raise ValueError(f"target.loss 'bce' needs target.kind 'direction', not {self.kind!r}")
        return self

    @property
    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "bce" if self.kind == "direction" else "huber"


class SplitConfig(_Section):
    """Chronological train / validation / test split, never shuffled across time."""

    train: float = Field(0.7, gt=0, lt=1)  # fractions of the usable rows, in time order
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    val_start: str | None = None  # or dates: validation starts here (overrides the fractions)
    test_start: str | None = None  # and the test split starts here
    embargo: int | None = Field(None, ge=0)  # bars dropped between splits; None = horizon + window

    @field_validator("val_start", "test_start", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        return _iso_date(v)

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if total > 1 + 1e-9:
            raise ValueError(f"split.train + split.val + split.test = {total:g} must be at most 1")
        if (self.val_start is None) != (self.test_start is None):
            raise ValueError("give both split.val_start and split.test_start, or neither")
        if self.val_start and self.test_start:
            from cryptonorm.candles import parse_date

            if parse_date(self.val_start) >= parse_date(self.test_start):
                raise ValueError(f"split.val_start ({self.val_start}) must be before split.test_start "
                                 f"({self.test_start})")
        return self


NORMS = ("none", "batch", "layer", "group", "instance", "rms", "weight")


class ModelConfig(_Section):
    """The forecaster and its normalization layer."""

    kind: Literal["mlp", "lstm"] = "mlp"
    norm: Literal["none", "batch", "layer", "group", "instance", "rms", "weight"] = "layer"
    norm_placement: Literal["layer", "cell"] = "layer"  # lstm only: "cell" = recurrent-normalized cells
    groups: int = Field(4, ge=1)  # GroupNorm groups: must divide every hidden width
    norm_eps: float = Field(1e-5, gt=0)
    norm_momentum: float = Field(0.1, gt=0, le=1)  # BatchNorm running-average momentum
    norm_affine: bool = True
    hidden: list[int] = [128, 64]  # MLP: widths of the hidden layers; LSTM: hidden size of each layer
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "gelu"

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError(f"give at least one width >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _combination(self) -> ModelConfig:
        if self.norm == "group":
            bad = [h for h in self.hidden if h % self.groups]
            if bad:
                raise ValueError(
                    f"model.groups={self.groups} must divide every width in model.hidden={self.hidden} "
                    f"({bad} not divisible); choose groups among {_common_divisors(self.hidden)}"
                )
        if self.kind == "mlp" and self.norm == "instance":
            raise ValueError(
                "model.norm 'instance' needs a sequence to normalize over; use it with model.kind 'lstm', "
                "or pick layer/group/batch/rms/weight for the mlp"
            )
        if self.norm_placement == "cell":
            if self.kind != "lstm":
                raise ValueError("model.norm_placement 'cell' is for model.kind 'lstm' only")
            if self.norm not in ("layer", "batch"):
                raise ValueError(
                    "model.norm_placement 'cell' supports model.norm 'layer' (Ba et al. 2016) or "
                    f"'batch' (Cooijmans et al. 2016), not {self.norm!r}"
                )
        return self


def _common_divisors(widths: list[int]) -> list[int]:
    return [g for g in range(1, min(widths) + 1) if all(w % g == 0 for w in widths)]


class TrainConfig(_Section):
    """Optimization and device."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; null = no clipping
    patience: int = Field(5, ge=1)  # early stopping on validation loss
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast on CUDA
    deterministic: bool = False  # torch deterministic algorithms (slower on CUDA)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; null = torch's default

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", v):
            raise ValueError(f"got {v!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        return v


class WalkForwardConfig(_Section):
    """Retrain every `step` bars on a rolling or expanding window; forecasts stay out of sample."""

    enabled: bool = False
    step: int = Field(720, ge=1)  # bars predicted per refit
    train_bars: int = Field(8760, ge=10)  # training window (rolling) or its minimum (expanding)
    mode: Literal["rolling", "expanding"] = "rolling"
    val_fraction: float = Field(0.15, gt=0, lt=1)  # tail of each training window used for early stopping


class BacktestConfig(_Section):
    """Forecasts -> positions -> returns after costs."""

    threshold: float = Field(0.0, ge=0)  # long if forecast > threshold, short if < -threshold
    allow_short: bool = True
    sizing: Literal["fixed", "forecast", "volatility"] = "fixed"
    target_vol: float = Field(0.5, gt=0)  # annualized, for sizing: volatility
    vol_lookback: int = Field(24 * 7, ge=2)  # bars, for sizing: volatility
    max_leverage: float = Field(1.0, gt=0)
    fee_bps: float = Field(10.0, ge=0)  # per side on traded notional (a spot taker fee)
    slippage_bps: float = Field(0.0, ge=0)  # per side on traded notional
    walk_forward: WalkForwardConfig = WalkForwardConfig()


class Config(_Section):
    """A whole experiment."""

    name: str = "experiment"
    seed: int = 0  # seeds model init, dropout and batch order; recorded in every run
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    target: TargetConfig = TargetConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    backtest: BacktestConfig = BacktestConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", v):
            raise ValueError(f"got {v!r}; use letters, digits, '_', '.', '-' (it names run directories)")
        return v

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe mapping of the resolved config (tuples as lists)."""
        return _plain(self.model_dump(mode="json"))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- loading and overrides


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags), with dates left as the strings they are written as.

    The config keeps dates as ISO strings anyway; PyYAML's implicit timestamps would turn `2024-02-30` into a
    ValueError from inside the parser instead of an error naming the key, and `start: 2020-01-01` into a
    date that a string field refuses. A key given twice in one mapping is an error (PyYAML would silently
    keep the last one, so half of a config could be ignored without a word).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; an explicit key may override a merged one
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# What PyYAML's constructors raise besides YAMLError: `!!int x` / a 5,000-digit number (ValueError), a bad
# explicit `!!timestamp` (AttributeError), deeply nested flow collections (RecursionError)
_YAML_FAILURES = (ValueError, TypeError, AttributeError, OverflowError, RecursionError)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one `--set a.b=c` item; the value is YAML-parsed (`3` -> int, `[1, 2]` -> list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set model.norm=group")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key, e.g. train.epochs")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except (yaml.YAMLError, *_YAML_FAILURES):
        value = raw  # not YAML: the plain string, validated (and refused, if wrong) like any value
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `raw` with each `dotted.key=value` set (sections created as needed)."""
    out: dict[str, Any] = _deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        set_dotted(out, parts, value)
    return out


def set_dotted(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """raw[a][b][c] = value for parts [a, b, c], creating (or replacing non-mapping) sections on the way."""
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; every failure becomes a one-line ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found; pass a path such as configs/quickstart.yaml")
    if p.is_dir():
        raise ConfigError(f"config {str(p)!r} is a directory; pass a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e}") from e
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}; fix the syntax and retry") from e
    except RecursionError:
        raise ConfigError(f"{p}: malformed YAML: nested too deeply; a config is a few levels of sections") from None
    except _YAML_FAILURES as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{p}: malformed YAML: a value cannot be read ({first}); check explicit !!tags "
                          "and numbers") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (data, model, ...), "
                          f"not a {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config file (or the defaults when `path` is None) and apply `--set` overrides."""
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, overrides), source=str(path) if path else "config")


def build_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a Config; errors name the dotted key and what is allowed."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from None
    except (TypeError, ValueError) as e:  # e.g. unhashable keys in odd YAML
        raise ConfigError(f"{source}: {e}") from None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation_error(e: ValidationError) -> str:
    """One line for the first error (and a count of the others)."""
    errors = e.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    # pydantic appends the union member or the tuple index; keep the user's dotted key readable
    key = ".".join(str(p) for p in loc if not (isinstance(p, str) and "[" in p))
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        name = str(loc[-1])
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}? " if close else ""
        section = ".".join(map(str, loc[:-1])) or "the top level"
        return f"unknown key {key!r}: {hint}allowed in {section}: {', '.join(allowed)}{more}"
    given = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        close = difflib.get_close_matches(str(given), re.findall(r"'([^']*)'", expected), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key}: got {given!r}; allowed: {expected.replace(' or ', ', ')}{hint}{more}"
    if err["type"] == "missing":
        return f"{key}: required{more}"
    shown = "" if isinstance(given, dict) or "got" in msg else f" (got {given!r})"
    if key and msg.startswith(f"{key}."):  # a section-level check already names its dotted key
        return f"{msg}{shown}{more}"
    return f"{key or 'config'}: {msg}{shown}{more}"


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML, keys in declaration order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
