"""Config sections of an experiment (features, target, split, model, train, backtest) and the root `Config`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cryptonorm.config.data import DataConfig, Section, iso_date
from cryptonorm.config.model import ModelConfig, check_model
from cryptonorm.config.tabular import check_tabular_across
from cryptonorm.config.universe import UNIVERSE_TARGETS, PortfolioConfig
from cryptonorm.timeframes import parse_date

MAX_PERIOD = 100_000  # bars of an indicator's period (11 years of 1h candles)


class FeaturesConfig(Section):
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
    funding: list[int] = [3, 21]  # swaps only: means/z-scores of the last n funding rates -> funding_mean_{n}, ...
    window: int = Field(32, ge=1, le=100_000)  # bars of history per sample (LSTM sequence length; MLP flattens it)
    scaler: Literal["standard", "robust", "minmax", "none"] = "standard"  # fitted on the train split only
    gap_policy: Literal["drop", "ffill"] = "drop"  # drop windows/labels spanning a gap, or ffill + mask
    inputs: Literal["stationary", "all"] = "stationary"  # "stationary" leaves out raw price-level columns
    # a universe (data.universe, issue 28): each row's features across the coins trading at that time
    cross_section: Literal["none", "zscore", "rank"] = "none"
    universe_features: bool = True  # a universe: add the cross-sectional mean return and dispersion

    @field_validator("sma", "ema", "rsi", "atr", "returns", "volatility", "volume_z", "funding")
    @classmethod
    def _periods(cls, v: list[int]) -> list[int]:
        if any(p < 1 or p > MAX_PERIOD for p in v):
            raise ValueError(f"periods must be between 1 and {MAX_PERIOD:,}, got {v}")
        return v

    @field_validator("macd")
    @classmethod
    def _macd(cls, v: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        for fast, slow, signal in v:
            if not (1 <= fast < slow <= MAX_PERIOD and 1 <= signal <= MAX_PERIOD):
                raise ValueError(f"each entry is [fast, slow, signal] with 1 <= fast < slow, got {v}")
        return v

    @field_validator("bbands")
    @classmethod
    def _bbands(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        for n, k in v:
            if not 2 <= n <= MAX_PERIOD or k <= 0:
                raise ValueError(f"each entry is [period >= 2, k > 0] (periods up to {MAX_PERIOD:,}), got {v}")
        return v


class TargetConfig(Section):
    """What the model forecasts."""

    # log return, its sign or realized volatility; excess_return (minus the cross-sectional mean) and rank
    # (cross-sectional percentile): a universe only
    kind: Literal["return", "direction", "volatility", "excess_return", "rank"] = "return"
    horizon: int = Field(1, ge=1, le=100_000)  # bars ahead
    # auto: bce for direction, qlike for volatility (README "Volatility forecasting"), huber otherwise.
    # qlike and nll (Gaussian negative log-likelihood of the returns) are losses on the forecast variance
    loss: Literal["auto", "mse", "huber", "bce", "qlike", "nll"] = "auto"
    vol_form: Literal["vol", "log_var", "var"] = "vol"  # volatility: what the network predicts (positive
    # outputs for vol and var); metrics are always reported on variance and vol
    rv: Literal["close", "parkinson", "garman_klass"] = "close"  # volatility: per-bar realized variance,
    # squared close-to-close return or a range estimator from OHLC (features/realized.py)

    @model_validator(mode="after")
    def _loss(self) -> TargetConfig:
        if self.kind == "direction" and self.loss not in ("bce", "auto"):
            raise ValueError("target.loss must be 'bce' or 'auto' when target.kind is 'direction'")
        if self.kind != "direction" and self.loss == "bce":
            raise ValueError(f"target.loss 'bce' needs target.kind 'direction', not {self.kind!r}")
        if self.kind != "volatility" and self.loss in ("qlike", "nll"):
            raise ValueError(f"target.loss {self.loss!r} is a loss on a forecast variance: it needs target.kind "
                             f"'volatility', not {self.kind!r}")
        return self

    @property
    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return {"direction": "bce", "volatility": "qlike"}.get(self.kind, "huber")


class WalkForwardConfig(Section):
    """Retrain every `step` bars on a rolling or expanding window; forecasts stay out of sample."""

    enabled: bool = False  # refit every `step` bars instead of one train/val/test split
    step: int = Field(720, ge=1, le=100_000_000)  # bars predicted per refit
    train_bars: int = Field(8760, ge=10, le=100_000_000)  # training window (rolling) or its minimum (expanding)
    mode: Literal["rolling", "expanding"] = "rolling"  # slide the training window, or grow it from the start
    val_fraction: float = Field(0.15, gt=0, lt=1)  # tail of each training window used for early stopping


class SplitConfig(Section):
    """Chronological train / validation / test split, never shuffled across time."""

    train: float = Field(0.7, gt=0, lt=1)  # fractions of the usable rows, in time order
    val: float = Field(0.15, gt=0, lt=1)  # validation: early stopping and model choice
    test: float = Field(0.15, gt=0, lt=1)  # test: reported once, never used for a choice
    val_start: str | None = None  # or dates: validation starts here (overrides the fractions)
    test_start: str | None = None  # and the test split starts here
    embargo: int | None = Field(None, ge=0, le=1_000_000)  # bars dropped between splits; None = horizon + window
    # retrain on a rolling/expanding window instead of one split (was backtest.walk_forward: it changes the
    # training, not the backtest; the old key is still read, with a note)
    walk_forward: WalkForwardConfig = WalkForwardConfig()

    @field_validator("val_start", "test_start", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        return iso_date(v)

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if total > 1 + 1e-9:
            raise ValueError(f"split.train + split.val + split.test = {total:g} must be at most 1")
        if (self.val_start is None) != (self.test_start is None):
            raise ValueError("give both split.val_start and split.test_start, or neither")
        if self.val_start and self.test_start:
            if parse_date(self.val_start) >= parse_date(self.test_start):
                raise ValueError(f"split.val_start ({self.val_start}) must be before split.test_start "
                                 f"({self.test_start})")
        return self


class TrainConfig(Section):
    """Optimization and device."""

    epochs: int = Field(20, ge=1, le=1_000_000)  # passes over the training split (with train.budget: epochs)
    batch_size: int = Field(256, ge=1, le=2**24)  # samples per optimizer step
    lr: float = Field(1e-3, gt=0)  # AdamW learning rate (at lr_reference_batch, see lr_scaling)
    weight_decay: float = Field(1e-4, ge=0)  # AdamW decoupled weight decay; none on biases and norm gains
    schedule: Literal["cosine", "plateau", "none"] = "cosine"  # learning-rate schedule
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; null = no clipping
    patience: int = Field(5, ge=1, le=1_000_000)  # early stopping on validation loss
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast on CUDA
    deterministic: bool = False  # torch deterministic algorithms (slower on CUDA)
    threads: int | None = Field(None, ge=1, le=4096)  # torch CPU threads; null = torch's default
    # a universe (issue 28): random = samples shuffled across coins and times; by_time = each batch holds
    # every coin at a few timestamps (whole timestamps in a random order; a batch's edges may split one)
    batching: Literal["random", "by_time"] = "random"
    # torch.compile of the model for training steps: none, default, reduce-overhead (CUDA graphs per shape
    # inside inductor); unavailable (MPS, no compiler) -> eager, with a note in the fit's message
    compile: Literal["none", "default", "reduce-overhead"] = "none"
    # capture the whole training step (gather, forward, loss, backward, clip, AdamW capturable) in one CUDA
    # graph; the last short batch of each epoch is dropped; without CUDA -> eager, with a note
    cuda_graph: bool = False
    # What is held equal between cells of different batch sizes: `epochs` passes over the training data
    # (batch 2 then takes 128x the optimizer steps of batch 256), `steps` optimizer steps (train.steps), or
    # `samples` training samples seen (train.samples; steps = ceil(samples / batch_size)). Under steps and
    # samples, train.epochs is not used: training runs ceil(steps / batches per epoch) passes, the last one
    # cut short, with validation and early stopping after each pass (patience still counts passes).
    budget: Literal["epochs", "steps", "samples"] = "epochs"
    steps: int | None = Field(None, ge=1, le=10**12)  # optimizer steps, with budget: steps
    samples: int | None = Field(None, ge=1, le=10**15)  # training samples seen, with budget: samples
    # Learning rate by batch size: lr * (batch_size / lr_reference_batch) (linear, Goyal et al. 2017) or
    # lr * sqrt(batch_size / lr_reference_batch) (sqrt); none = train.lr for every batch size.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: int = Field(256, ge=1, le=2**24)  # the batch size at which train.lr applies unscaled

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        for key in ("steps", "samples"):
            given = getattr(self, key) is not None
            if self.budget == key and not given:
                raise ValueError(f"train.budget {key} needs train.{key} (e.g. train.{key}: "
                                 f"{2000 if key == 'steps' else 500000})")
            if given and self.budget != key:
                raise ValueError(f"train.{key} is only used with train.budget: {key} (budget is {self.budget!r}); "
                                 f"set train.budget: {key} or remove train.{key}")
        return self

    @property
    def scaled_lr(self) -> float:
        """train.lr scaled to this batch size by train.lr_scaling."""
        ratio = self.batch_size / self.lr_reference_batch
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[self.lr_scaling]

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", v):
            raise ValueError(f"got {v!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        return v


# Bounds of the backtest's costs and sizing. 1,000 bps = 10% per side is far above any exchange's fee or a
# liquid market's slippage (a round trip then costs 20%); 100x is the most leverage exchanges offer on
# BTC perpetuals; 1,000% a year is the volatility of the wildest coins. Beyond these, results mean nothing.
MAX_COST_BPS = 1_000.0
MAX_LEVERAGE = 100.0
MAX_TARGET_VOL = 10.0


class BacktestConfig(Section):
    """Forecasts -> positions -> returns after costs."""

    # auto: vol_target for target.kind volatility, direction otherwise. direction: long/short on the
    # forecast's sign (return or direction targets); vol_target: hold the underlying at
    # target_vol / forecast vol, capped by max_leverage (volatility targets)
    mode: Literal["auto", "direction", "vol_target"] = "auto"
    threshold: float = Field(0.0, ge=0)  # long if forecast > threshold, short if < -threshold
    allow_short: bool = True  # false: flat instead of short
    sizing: Literal["fixed", "forecast", "volatility"] = "fixed"  # size: 1, by forecast strength, or to target_vol
    target_vol: float = Field(0.5, gt=0, le=MAX_TARGET_VOL)  # annualized, for sizing: volatility and mode: vol_target
    # bars, for sizing: volatility (and vol_target's trailing baseline)
    vol_lookback: int = Field(24 * 7, ge=2, le=1_000_000)
    max_leverage: float = Field(1.0, gt=0, le=MAX_LEVERAGE)  # cap on the absolute position, in units of equity
    fee_bps: float = Field(10.0, ge=0, le=MAX_COST_BPS)  # per side on traded notional (a spot taker fee)
    slippage_bps: float = Field(0.0, ge=0, le=MAX_COST_BPS)  # per side on traded notional
    funding: Literal["auto", "off"] = "auto"  # auto: a swap's positions pay/earn funding; off: ignore it
    # a universe's portfolio (issue 28): config/universe.py, trade/portfolio.py
    portfolio: PortfolioConfig | None = None

    @field_validator("funding", mode="before")
    @classmethod
    def _funding_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


def check_name(v: str, names: str) -> str:
    """A `name` that can name a folder: letters, digits, '_', '.', '-', not starting with a dot or dash."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", v):
        raise ValueError(f"got {v!r}; use letters, digits, '_', '.', '-' (it names {names})")
    return v


class Config(Section):
    """A whole experiment."""

    name: str = "experiment"  # names the run directory (runs/<name>-<time>/) and tracking experiments
    seed: int = Field(0, ge=0, le=2**32 - 1)  # seeds model init, dropout and batch order; recorded in every run
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
        return check_name(v, "run directories")

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        # checks that span sections live here, so `config validate`, train, fetch and sweeps all refuse them;
        # the model's are the same function training runs (norm_facts.py: one table of what each norm needs)
        check_model(self.model, self.train.batch_size, self.features.window)
        check_tabular_across(self)  # ridge / lightgbm: model.lags vs the window, no universe (config/tabular.py)
        return self

    @model_validator(mode="after")
    def _backtest_mode(self) -> Config:
        mode, kind = self.backtest.mode, self.target.kind
        if mode == "vol_target" and kind != "volatility":
            raise ValueError(f"backtest.mode 'vol_target' sizes by a volatility forecast: it needs target.kind "
                             f"'volatility', not {kind!r}; use backtest.mode 'auto' or 'direction'")
        if mode == "direction" and kind == "volatility":
            raise ValueError("backtest.mode 'direction' trades the sign of a return or direction forecast; a "
                             "volatility forecast has no sign: use backtest.mode 'vol_target' (or 'auto')")
        return self

    @model_validator(mode="after")
    def _universe(self) -> Config:
        # the universe's keys (issue 28; config/universe.py) need data.universe
        if self.data.universe is not None:
            return self
        if self.target.kind in UNIVERSE_TARGETS:
            raise ValueError(f"target.kind {self.target.kind!r} is cross-sectional: it needs a universe of coins "
                             "(data.universe.symbols); for one coin use 'return'")
        if self.features.cross_section != "none":
            raise ValueError("features.cross_section normalizes across coins: it needs data.universe.symbols; "
                             "set it to none for one coin")
        if self.backtest.portfolio is not None:
            raise ValueError("backtest.portfolio trades a universe of coins: it needs data.universe.symbols")
        if self.train.batching != "random":
            raise ValueError("train.batching by_time groups the coins of a universe by timestamp: it needs "
                             "data.universe.symbols; use random for one coin")
        return self

    @property
    def backtest_mode(self) -> str:
        """backtest.mode with auto resolved: vol_target for volatility targets, else direction."""
        if self.backtest.mode != "auto":
            return self.backtest.mode
        return "vol_target" if self.target.kind == "volatility" else "direction"

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe mapping of the resolved config (tuples as lists)."""
        return self.model_dump(mode="json")  # JSON mode: tuples are lists already
