"""kind tsmixer: Chen et al. (TMLR 2023), "TSMixer: An All-MLP Architecture for Time Series Forecasting".

Each of `model.tsmixer.blocks` residual blocks mixes along time, then along features (the authors' code,
google-research/tsmixer_rev_in, `res_block`), with the norm before each mixing (pre-norm):

    x = x + drop(act(Linear_time(N(x)^T))^T)                   (B, W, F): one W x W map shared by features
    x = x + drop(Linear(F <- ff)(drop(act(Linear(ff <- F)(N(x))))))

N normalizes each (W, F) window as a whole, as the paper's 2-D norms (axis [-2, -1]): batch (the paper's
default: each of the W*F entries over the batch), batchrenorm, layer (over all W*F entries of a sample),
or none. The head maps time to one step (Linear(W -> 1) per feature, the paper's temporal projection) and
Linear(F -> out) joins the features into the forecast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.models.base import ACTIVATIONS, Forecaster, squeeze_out
from cryptonorm.learn.norms import make_norm

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


class WindowNorm(nn.Module):
    """`model.norm` over the (W, F) window flattened to W*F channels: (B, W, F) -> (B, W, F)."""

    def __init__(self, m: ModelConfig, window: int, n_features: int) -> None:
        super().__init__()
        self.norm = make_norm(m, window * n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(1)).view_as(x)


class MixerBlock(nn.Module):
    """Time mixing then feature mixing, each residual with a norm before it."""

    def __init__(self, m: ModelConfig, window: int, n_features: int) -> None:
        super().__init__()
        self.norm_time, self.norm_feat = WindowNorm(m, window, n_features), WindowNorm(m, window, n_features)
        self.time = nn.Linear(window, window)
        self.feat1, self.feat2 = nn.Linear(n_features, m.tsmixer.ff), nn.Linear(m.tsmixer.ff, n_features)
        self.act = ACTIVATIONS[m.activation]()
        self.drop = nn.Dropout(m.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B, W, F)
        t = self.act(self.time(self.norm_time(x).transpose(1, 2))).transpose(1, 2)  # mix along time
        x = x + self.drop(t)
        f = self.feat2(self.drop(self.act(self.feat1(self.norm_feat(x)))))  # mix along features
        return x + self.drop(f)


class TSMixer(Forecaster):
    """Mixer blocks, then the temporal projection and a Linear over features."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        self.out_dim = out_dim
        self.blocks = nn.Sequential(*(MixerBlock(m, window, n_features) for _ in range(m.tsmixer.blocks)))
        self.temporal = nn.Linear(window, 1)
        self.head = nn.Linear(n_features, out_dim)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        h = self.blocks(x)  # (B, W, F)
        per_feature = self.temporal(h.transpose(1, 2)).squeeze(-1)  # (B, F)
        return squeeze_out(self.head(per_feature))
