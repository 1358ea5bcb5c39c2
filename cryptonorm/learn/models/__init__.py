"""Forecasters whose normalization layer is a config switch, one module per family.

Every model maps a window of features (B, W, F) to one number per sample (B,) (or (B, out_dim)): a
standardized return or volatility, or the logit of an up move. Imports only torch (and the torch-free norm
facts). Which norms each kind allows, its defaults and whether it is sequential: the KINDS table in
config/norm_facts.py; `BUILDERS` here is keyed by the same names (tests/test_norm_facts.py).

  mlp          mlp.py          flattened window, [Linear -> norm -> act -> dropout] layers
  lstm         lstm.py         stacked LSTM, norm between layers or inside the cell (LN-/BN-LSTM)
  gru          gru.py          stacked GRU, norm between layers
  tcn          tcn.py          causal dilated residual convolutions (Bai et al. 2018), weight norm default
  transformer  transformer.py  encoder over the bars (Vaswani et al. 2017), pre/post norm
  patchtst     patchtst.py     patches + channel independence + RevIN (Nie et al. 2023), BatchNorm default
  tsmixer      tsmixer.py      time- and feature-mixing MLPs (Chen et al. 2023), BatchNorm default
  dlinear      dlinear.py      trend/remainder decomposition + two linear maps (Zeng et al. 2023), no norm
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cryptonorm.learn.models.base import ACTIVATIONS, Forecaster
from cryptonorm.learn.models.dlinear import DLinear
from cryptonorm.learn.models.gru import GRU
from cryptonorm.learn.models.lstm import LSTM, BatchNormLSTM, LayerNormLSTM
from cryptonorm.learn.models.mlp import MLP
from cryptonorm.learn.models.patchtst import PatchTST
from cryptonorm.learn.models.tcn import TCN
from cryptonorm.learn.models.transformer import Transformer
from cryptonorm.learn.models.tsmixer import TSMixer

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


class Builder(Protocol):
    def __call__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> Forecaster: ...


# model.kind -> its class (keys: config/norm_facts.py KINDS)
BUILDERS: dict[str, Builder] = {"mlp": MLP, "lstm": LSTM, "gru": GRU, "tcn": TCN, "transformer": Transformer,
                                "patchtst": PatchTST, "tsmixer": TSMixer, "dlinear": DLinear}


def build_model(m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> Forecaster:
    """The forecaster described by `m`, for windows of `window` rows of `n_features` features."""
    from cryptonorm.config import check_model  # pydantic, not torch: imported where a model is built

    if n_features < 1 or window < 1:
        raise ValueError(f"need n_features >= 1 and window >= 1, got {n_features} and {window}")
    check_model(m, window=window)  # the config's own rules, for a hand-built ModelConfig
    return BUILDERS[m.kind](m, n_features, window, out_dim)


__all__ = ["ACTIVATIONS", "BUILDERS", "BatchNormLSTM", "DLinear", "Forecaster", "GRU", "LSTM", "LayerNormLSTM",
           "MLP", "PatchTST", "TCN", "TSMixer", "Transformer", "build_model"]
