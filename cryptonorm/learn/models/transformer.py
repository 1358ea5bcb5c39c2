"""kind transformer: an encoder over the window's bars (Vaswani et al. 2017, "Attention Is All You Need").

    x_t = W_in f_t + p_t                      (B, W, d): each bar's features projected, plus its position
    post-norm (the paper):  x = N1(x + MHA(x)),      x = N2(x + FF(x))
    pre-norm:               x = x + MHA(N1(x)),      x = x + FF(N2(x)),   and N_out(x) after the last layer
    forecast = Linear(x_W)                     the last bar's representation

`model.norm_position` picks pre or post; `model.norm` is N (layer, the default; batch / batchrenorm over
batch x time, as Zerveas et al. 2021 use for time series; rms; group over channel groups x time; none).
Positions: learned (`model.transformer.positions: learned`) or the paper's sinusoids. The layer is the
computation of torch.nn.TransformerEncoderLayer (same parameter names; tests/test_zoo.py checks equal
outputs with equal weights) with the norm as a switch. patchtst.py reuses `Encoder`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.models.base import ACTIVATIONS, Forecaster, squeeze_out
from cryptonorm.learn.norms import SeqNorm

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


class SelfAttention(nn.Module):
    """Multi-head self-attention on (B, T, d): nn.MultiheadAttention's parameters (names, shapes, init), its
    computation through F.scaled_dot_product_attention. Why not nn.MultiheadAttention itself: on the CPU its
    many tiny per-head matmuls and separate softmax/dropout took 1.3x as long for PatchTST's (B*F, P, d)
    batches, and in eval it runs a fused op the TorchScript ONNX exporter cannot export."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))  # (3d, d): q, k, v stacked
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = x.shape
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3d)
        q, k, v = qkv.view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, T, d/h)
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, d))


class EncoderLayer(nn.Module):
    """One encoder layer on (B, T, d): self-attention and feed-forward sublayers, each with a residual and
    `model.norm` before (pre) or after (post) it."""

    def __init__(self, m: ModelConfig, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        # no dropout on the attention weights (PatchTST's code: attn_dropout = 0; torch's layer has it): it keeps
        # scaled_dot_product_attention on its fused kernel; model.dropout acts on the residual branches and
        # inside the feed-forward, as in torch's layer
        self.self_attn = SelfAttention(d_model, heads, 0.0)
        self.linear1, self.linear2 = nn.Linear(d_model, ff), nn.Linear(ff, d_model)
        self.norm1, self.norm2 = SeqNorm(m, d_model), SeqNorm(m, d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(m.dropout), nn.Dropout(m.dropout), nn.Dropout(m.dropout)
        self.activation = ACTIVATIONS[m.activation]()
        self.pre = m.norm_position == "pre"

    def _sa(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn(x))

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        if self.pre:
            x = x + self._sa(self.norm1(x))
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x))
        return self.norm2(x + self._ff(x))


class Encoder(nn.Module):
    """`layers` encoder layers; pre-norm ends with one more norm (the residual stream is never normalized)."""

    def __init__(self, m: ModelConfig, d_model: int, heads: int, ff: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(m, d_model, heads, ff) for _ in range(layers))
        self.norm = SeqNorm(m, d_model) if m.norm_position == "pre" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def sinusoids(length: int, d_model: int) -> torch.Tensor:
    """The paper's positions: PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...); (T, d)."""
    t = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)[:, : d_model // 2]
    return pe.float()


class Positions(nn.Module):
    """Adds a position vector to each of the T steps: learned (init N(0, 0.02)) or fixed sinusoids."""

    def __init__(self, length: int, d_model: int, kind: str) -> None:
        super().__init__()
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(length, d_model) * 0.02)  # (T, d)
        else:
            self.register_buffer("table", sinusoids(length, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        return x + self.table


class Transformer(Forecaster):
    """Bars projected to d_model, positions added, the encoder, a Linear head on the last bar."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        c = m.transformer
        self.out_dim = out_dim
        self.embed = nn.Linear(n_features, c.d_model)
        self.positions = Positions(window, c.d_model, c.positions)
        self.drop = nn.Dropout(m.dropout)
        self.encoder = Encoder(m, c.d_model, c.heads, c.ff, c.layers)
        self.head = nn.Linear(c.d_model, out_dim)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        h = self.encoder(self.drop(self.positions(self.embed(x))))  # (B, W, d)
        return squeeze_out(self.head(h[:, -1]))
