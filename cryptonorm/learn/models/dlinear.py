"""kind dlinear: Zeng et al. (AAAI 2023), "Are Transformers Effective for Time Series Forecasting?".

    trend     = moving average of each feature over `model.dlinear.kernel` bars (odd), the window's edges
                padded by repeating its first and last bar (k - 1) / 2 times (the paper's series_decomp)
    remainder = x - trend
    forecast  = Linear_s(remainder) + Linear_t(trend)   each over the flattened (W * F) window

No norm and no nonlinearity: the linear deep baseline these papers compare with (the paper maps each
feature's W bars to its own forecast; with one target here each map reads all features' W bars).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.models.base import Forecaster, squeeze_out

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


def decompose(x: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W, F) -> (remainder, trend), both (B, W, F); trend = edge-padded centred moving average."""
    half = (kernel - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, half, -1), x, x[:, -1:].expand(-1, half, -1)], dim=1)
    trend = nn.functional.avg_pool1d(padded.transpose(1, 2), kernel, stride=1).transpose(1, 2)  # (B, W, F)
    return x - trend, trend


class DLinear(Forecaster):
    """Two linear maps, on the remainder and on the trend of the window."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        self.out_dim = out_dim
        self.kernel = m.dlinear.kernel
        self.seasonal = nn.Linear(window * n_features, out_dim)
        self.trend = nn.Linear(window * n_features, out_dim)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        remainder, trend = decompose(x, self.kernel)
        return squeeze_out(self.seasonal(remainder.flatten(1)) + self.trend(trend.flatten(1)))
