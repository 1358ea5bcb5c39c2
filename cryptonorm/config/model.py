"""The `model` section: the forecaster, its normalization layer, and each family's own keys.

Which norms, placements and kinds exist, and which combinations are allowed, come from the tables in
norm_facts.py; `check_model` is the one check of a model against them (the config runs it, and so do the
model builders and training, for a hand-built config). Old flat keys (`norm_momentum`, `bn_eval`,
`bn_recalibrate_bars`, `renorm_*`) are accepted and moved into `batch_norm` / `renorm` with a note.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cryptonorm.config.data import Section
from cryptonorm.config.norm_facts import (
    KINDS,
    InputNormName,
    KindName,
    NormName,
    PlacementName,
    bn_eval_problem,
    data_problem,
    norm_problem,
)
from cryptonorm.config.tabular import LightGBMConfig, RidgeConfig, check_tabular

MAX_WIDTH = 65_536  # units of a hidden layer (and GroupNorm groups): every integer of a config has bounds


class BatchNormConfig(Section):
    """Every norm with batch statistics (batch, batchrenorm, the BN-LSTM cell): training and inference."""

    momentum: float = Field(0.1, gt=0, le=1)  # running-average momentum
    # at inference: running averages (running), re-estimated after training on the latest recalibrate_bars
    # training windows with the weights frozen (recalibrate, AdaBN), or the inference batch's own statistics
    # (batch: a diagnostic, leaks across the batch)
    eval: Literal["running", "recalibrate", "batch"] = "running"
    recalibrate_bars: int = Field(2000, ge=2, le=200_000)  # most recent training windows (one batch)


class RenormConfig(Section):
    """Batch renormalization (Ioffe 2017): the clip limits and their schedule."""

    r_max: float = Field(3.0, ge=1)  # final bound on r (the paper's 3)
    d_max: float = Field(5.0, ge=0)  # final bound on d (the paper's 5)
    warmup_steps: int = Field(5000, ge=0, le=10**12)  # steps of plain BatchNorm (r_max=1, d_max=0) first
    r_max_steps: int = Field(40000, ge=0, le=10**12)  # step at which r_max is reached (linear ramp)
    d_max_steps: int = Field(25000, ge=0, le=10**12)  # step at which d_max is reached (linear ramp)

    @model_validator(mode="after")
    def _ramp(self) -> RenormConfig:
        for key in ("r_max_steps", "d_max_steps"):
            if getattr(self, key) < self.warmup_steps:
                raise ValueError(f"model.renorm.{key}={getattr(self, key)} must be at least "
                                 f"model.renorm.warmup_steps={self.warmup_steps} (the ramp starts there)")
        return self


class TCNConfig(Section):
    """kind tcn: one residual block per model.hidden width (Bai et al. 2018)."""

    kernel_size: int = Field(3, ge=2)
    dilations: list[int] | None = None  # one per block; null = 1, 2, 4, ... (the paper's 2^i)

    @field_validator("dilations")
    @classmethod
    def _dilations(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < 1 for d in v)):
            raise ValueError(f"give one dilation >= 1 per residual block, got {v}")
        return v


class TransformerConfig(Section):
    """kind transformer: an encoder over the window's bars (Vaswani et al. 2017)."""

    d_model: int = Field(32, ge=2)
    heads: int = Field(4, ge=1)  # must divide d_model; 8 dimensions per head
    layers: int = Field(2, ge=1)
    ff: int = Field(64, ge=1)  # feed-forward width
    positions: Literal["learned", "sinusoidal"] = "learned"


class PatchTSTConfig(Section):
    """kind patchtst: each feature alone, cut into patches, through a shared encoder (Nie et al. 2023)."""

    patch_len: int = Field(8, ge=1)  # bars per patch (the paper: 16 of 336-512)
    stride: int = Field(4, ge=1)  # bars between patch starts (the paper: 8)
    d_model: int = Field(16, ge=2)
    heads: int = Field(2, ge=1)  # 8 dimensions per head, as the paper's 128 / 16
    layers: int = Field(2, ge=1)
    ff: int = Field(32, ge=1)


class TSMixerConfig(Section):
    """kind tsmixer: time-mixing and feature-mixing MLP blocks (Chen et al. 2023)."""

    blocks: int = Field(2, ge=1)
    ff: int = Field(32, ge=1)  # feature-mixing hidden width


class DLinearConfig(Section):
    """kind dlinear: moving-average trend + remainder, one linear map each (Zeng et al. 2023)."""

    kernel: int = Field(25, ge=1)  # moving-average length (the paper's 25); odd, edges padded by repetition

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (the average is centred; the paper uses 25), got {v}")
        return v


# old flat key -> (group, key in the group)
DEPRECATED_KEYS: dict[str, tuple[str, str]] = {
    "norm_momentum": ("batch_norm", "momentum"),
    "bn_eval": ("batch_norm", "eval"),
    "bn_recalibrate_bars": ("batch_norm", "recalibrate_bars"),
    **{f"renorm_{k}": ("renorm", k) for k in ("r_max", "d_max", "warmup_steps", "r_max_steps", "d_max_steps")},
}


class ModelConfig(Section):
    """The forecaster and its normalization layer. Allowed values and combinations: norm_facts.py."""

    kind: KindName = "mlp"
    # the hidden-layer norm; default: the kind's own (layer; weight for tcn; batch for patchtst and tsmixer;
    # none for dlinear); batchrenorm = batch renormalization (Ioffe 2017), see model.renorm
    norm: NormName = "layer"
    norm_placement: PlacementName = "layer"  # lstm and gru: "cell" = recurrent-normalized cells
    norm_position: Literal["pre", "post"] = "pre"  # transformer / patchtst: norm before or after each sublayer
    groups: int = Field(4, ge=1, le=MAX_WIDTH)  # GroupNorm groups: must divide every normalized width
    norm_eps: float = Field(1e-5, gt=0)  # every norm's epsilon, RevIN's too
    norm_affine: bool = True
    # normalize each input window before the network: revin (Kim et al. 2022, reversible instance norm,
    # forecast de-normalized, see revin_denorm) or dain (Passalis et al. 2019, adaptive shift/scale/gate)
    input_norm: InputNormName = "none"
    input_norm_affine: bool = True  # RevIN's learnable per-feature gain and bias
    # RevIN: auto = de-normalize the forecast with the window statistics of the input column in the
    # target's units (logret_{horizon} for return, the nearest vol_{n} for volatility) when it is an
    # input; off = never (the network then forecasts the standardized target directly)
    revin_denorm: Literal["auto", "off"] = "auto"
    batch_norm: BatchNormConfig = BatchNormConfig()
    renorm: RenormConfig = RenormConfig()
    # MLP: widths of the hidden layers; LSTM/GRU: hidden size of each layer; TCN: channels of each block
    hidden: list[int] = [128, 64]
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "gelu"
    tcn: TCNConfig = TCNConfig()
    transformer: TransformerConfig = TransformerConfig()
    patchtst: PatchTSTConfig = PatchTSTConfig()
    tsmixer: TSMixerConfig = TSMixerConfig()
    dlinear: DLinearConfig = DLinearConfig()
    # ridge / lightgbm (config/tabular.py): the last `lags` bars of the window, flattened; null = all of it
    lags: int | None = Field(None, ge=1)
    ridge: RidgeConfig = RidgeConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults_and_old_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, (group, key) in DEPRECATED_KEYS.items():
            if old in data:
                section = data.get(group, {})
                section = dict(section) if isinstance(section, dict) else section
                if isinstance(section, dict) and key in section:
                    raise ValueError(f"model.{old} and model.{group}.{key} are the same setting: give only "
                                     f"model.{group}.{key}")
                if isinstance(section, dict):
                    section[key] = data.pop(old)
                    data[group] = section
                    warnings.warn(f"model.{old} is deprecated: write model.{group}.{key} (same meaning)",
                                  FutureWarning, stacklevel=2)
        kind = data.get("kind", "mlp")
        facts = KINDS.get(kind) if isinstance(kind, str) else None
        if facts is not None:  # an unknown kind is refused by the literal, naming the allowed ones
            data.setdefault("norm", facts.default_norm)
            for key, value in facts.defaults.items():
                data.setdefault(key, value)
        return data

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 or h > MAX_WIDTH for h in v):
            raise ValueError(f"give at least one width, each between 1 and {MAX_WIDTH:,}, got {v}")
        return v

    @model_validator(mode="after")
    def _combination(self) -> ModelConfig:
        check_tabular(self)  # ridge / lightgbm: input_norm, lags on a network, LightGBM installed
        problem = norm_problem(self.kind, self.norm, self.norm_placement) or bn_eval_problem(
            self.norm, self.batch_norm.eval) or self._shape_problem()
        if problem:
            raise ValueError(problem)
        return self

    def norm_widths(self) -> list[int]:
        """The widths the hidden-layer norm normalizes (GroupNorm's groups must divide each)."""
        return {"transformer": [self.transformer.d_model], "patchtst": [self.patchtst.d_model]}.get(
            self.kind, self.hidden)

    def _shape_problem(self) -> str | None:
        if self.norm == "group":
            widths = self.norm_widths()
            bad = [h for h in widths if h % self.groups]
            if bad:
                key = {"transformer": "model.transformer.d_model", "patchtst": "model.patchtst.d_model"}.get(
                    self.kind, "model.hidden")
                return (f"model.groups={self.groups} must divide every width in {key}={widths} ({bad} not "
                        f"divisible); choose groups among {_common_divisors(widths)}")
        for name in ("transformer", "patchtst"):
            sub = getattr(self, name)
            if self.kind == name and sub.d_model % sub.heads:
                return (f"model.{name}.heads={sub.heads} must divide model.{name}.d_model={sub.d_model}; "
                        f"choose heads among {_common_divisors([sub.d_model])}")
        if self.kind == "tcn" and self.tcn.dilations is not None and len(self.tcn.dilations) != len(self.hidden):
            return (f"model.tcn.dilations has {len(self.tcn.dilations)} entries but model.hidden has "
                    f"{len(self.hidden)} residual blocks: give one dilation per block, or null for 1, 2, 4, ...")
        return None

    @property
    def tcn_dilations(self) -> list[int]:
        """The TCN's dilation per residual block (the paper's 2^i unless given)."""
        return self.tcn.dilations or [2**i for i in range(len(self.hidden))]

    @property
    def tcn_receptive_field(self) -> int:
        """Bars a TCN output sees: 1 + 2 (k - 1) sum(dilations) (two causal convolutions per block)."""
        return 1 + 2 * (self.tcn.kernel_size - 1) * sum(self.tcn_dilations)


def _common_divisors(widths: list[int]) -> list[int]:
    return [g for g in range(1, min(widths) + 1) if all(w % g == 0 for w in widths)]


def check_model(m: ModelConfig, batch_size: int | None = None, window: int | None = None) -> None:
    """The one check of a model against the norm and kind tables, the batch size and the window (each
    None when not known). Raises ValueError naming the key; the config, the builders and training call it."""
    problem = (norm_problem(m.kind, m.norm, m.norm_placement) or bn_eval_problem(m.norm, m.batch_norm.eval)
               or data_problem(m.norm, m.input_norm, batch_size, window))
    if problem is None and window is not None:
        problem = window_problem(m, window)
    if problem:
        raise ValueError(problem)


def window_problem(m: ModelConfig, window: int) -> str | None:
    """Family shapes that depend on features.window."""
    if m.kind == "tcn" and m.tcn_receptive_field < window:
        return (f"model.kind tcn sees {m.tcn_receptive_field} bars (receptive field 1 + 2 (kernel_size - 1) "
                f"sum(dilations)) but features.window is {window}: raise model.tcn.kernel_size, add blocks to "
                "model.hidden or larger model.tcn.dilations, or shorten features.window")
    if m.kind == "patchtst" and m.patchtst.patch_len > window:
        return (f"model.patchtst.patch_len={m.patchtst.patch_len} is longer than features.window={window}: "
                "shorten the patch or lengthen the window")
    return None
