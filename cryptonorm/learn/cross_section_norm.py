"""The cross-sectional normalization of a universe (issue 28): BatchNorm whose statistics are taken per
timestamp group inside the batch. Imports only torch.

For a batch of samples (coin c, time t) with group g = the sample's timestamp:
    mean_g, var_g   mean and biased variance per channel over the samples of group g (and over time for a
                    (B, C, T) input, as BatchNorm1d)
    y = (x - mean_g) / sqrt(var_g + eps) * weight + bias
At time t every coin's activations are normalized by that moment's cross-section: causal (all coins at t
are known together), the same in training and at inference, no running averages. A group of one sample
normalizes to `bias`.

Not wired into the models yet: `forward` needs each sample's group, which the training loop has for
train.batching by_time (`loop.Batches.groups`) but does not pass to the model; inference would also have
to predict whole timestamps per chunk. See docs/guide/universe.md.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossSectionNorm(nn.Module):
    """Per-timestamp-group batch normalization of (B, C) or (B, C, T) activations."""

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:  # x (B, C[, T]), groups (B,) int64
        n_groups = int(groups.max()) + 1
        per = x if x.dim() == 2 else x.sum(dim=2)  # (B, C) summed over time
        steps = 1 if x.dim() == 2 else x.shape[2]
        count = torch.bincount(groups, minlength=n_groups).to(x.dtype) * steps  # (G,)
        total = torch.zeros(n_groups, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, groups, per)
        mean = (total / count[:, None])[groups]  # (B, C) each sample's group mean
        centered = x - (mean if x.dim() == 2 else mean[:, :, None])
        sq = centered * centered
        sq = sq if x.dim() == 2 else sq.sum(dim=2)
        var = (torch.zeros_like(total).index_add(0, groups, sq) / count[:, None])[groups]  # (B, C)
        inv = torch.rsqrt(var + self.eps)
        out = centered * (inv if x.dim() == 2 else inv[:, :, None])
        if self.weight is not None and self.bias is not None:
            shape = (1, -1) if x.dim() == 2 else (1, -1, 1)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out
