"""kind tcn: the temporal convolutional network of Bai, Kolter & Koltun (2018), "An Empirical Evaluation of
Generic Convolutional and Recurrent Networks for Sequence Modeling".

One residual block per `model.hidden` width, dilation d_i (`model.tcn.dilations`, default 2^i):

    y = act(norm(conv_d(x)))  -> dropout -> act(norm(conv_d(y))) -> dropout ;  out = act(y + res(x))

conv_d is a causal dilated convolution (kernel `model.tcn.kernel_size`, left-padded by (k - 1) d, so the
output at t sees only bars <= t); res is a 1x1 convolution when the width changes. The paper normalizes
the weights (weight norm, `model.norm: weight`, the default); every other `model.norm` sits where the
paper has none, after each convolution: batch/batchrenorm over batch x time, layer/rms over the channels
of each step (causal), group/instance over time (they mix the window's bars: still no bar after the
forecast time, but the representation at t then depends on later bars of the window).
The receptive field is 1 + 2 (k - 1) sum(d_i) bars; the config refuses one shorter than features.window.
The head reads the last step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cryptonorm.learn.models.base import ACTIVATIONS, Forecaster, squeeze_out
from cryptonorm.learn.norms import make_norm

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


class ChannelsFirstNorm(nn.Module):
    """`model.norm` for a (B, C, T) tensor: layer/rms act on the channels of each step (a transpose), the
    others (BatchNorm, GroupNorm, InstanceNorm) take (B, C, T) as it is."""

    def __init__(self, m: ModelConfig, channels: int) -> None:
        super().__init__()
        self.norm = make_norm(m, channels)
        self.per_step = m.norm in ("layer", "rms")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, T)
        if self.per_step:
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class CausalConv(nn.Module):
    """Dilated convolution that sees only the past: (B, C_in, T) -> (B, C_out, T), left zero padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, weight_normed: bool) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        # w = g v / ||v||, one g per output channel (dim 0), as the paper's weight_norm(nn.Conv1d(...))
        self.conv = weight_norm(conv, name="weight", dim=0) if weight_normed else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (self.pad, 0)))


class TemporalBlock(nn.Module):
    """Two causal convolutions with norm, activation and dropout, plus the residual connection."""

    def __init__(self, m: ModelConfig, c_in: int, c_out: int, dilation: int) -> None:
        super().__init__()
        k, wn = m.tcn.kernel_size, m.norm == "weight"
        self.conv1, self.conv2 = CausalConv(c_in, c_out, k, dilation, wn), CausalConv(c_out, c_out, k, dilation, wn)
        self.norm1, self.norm2 = ChannelsFirstNorm(m, c_out), ChannelsFirstNorm(m, c_out)
        self.act = ACTIVATIONS[m.activation]()
        self.drop = nn.Dropout(m.dropout)
        self.res = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T)
        y = self.drop(self.act(self.norm1(self.conv1(x))))
        y = self.drop(self.act(self.norm2(self.conv2(y))))
        return self.act(y + self.res(x))


class TCN(Forecaster):
    """Residual blocks of causal dilated convolutions over the window, a Linear head on the last step."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        self.out_dim = out_dim
        blocks, width = [], n_features
        for h, d in zip(m.hidden, m.tcn_dilations, strict=True):
            blocks.append(TemporalBlock(m, width, h, d))
            width = h
        self.blocks = nn.Sequential(*blocks)
        self.receptive_field = m.tcn_receptive_field
        self.head = nn.Linear(width, out_dim)

    def represent(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B, C, W): the representation per bar
        return self.blocks(x.transpose(1, 2))

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        return squeeze_out(self.head(self.represent(x)[:, :, -1]))
