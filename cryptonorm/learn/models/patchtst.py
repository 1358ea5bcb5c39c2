"""kind patchtst: Nie et al. (ICLR 2023), "A Time Series is Worth 64 Words" (PatchTST/supervised).

    channel independence   the (B, W, F) window becomes B*F univariate series of W bars, all through the
                           same weights
    patching               each series is padded at the end with `stride` copies of its last bar (the
                           paper's padding_patch "end") and cut into P = (W - patch_len) // stride + 2
                           patches of `patch_len` bars, `stride` apart: (B*F, P, patch_len)
    encoder                Linear(patch_len -> d) + learned positions, then transformer layers (the
                           Encoder of transformer.py) whose norm is `model.norm`: batch (the paper's
                           BatchNorm over batch x patches, the default), batchrenorm, layer, rms or none;
                           `model.norm_position` post by default, as the paper's code
    head                   each series' (P, d) flattened -> Linear -> one number per feature (the paper's
                           flatten head), then Linear(F -> out) joins the features into the forecast
    RevIN                  the paper's instance norm is `model.input_norm: revin`, this kind's default
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.models.base import Forecaster, squeeze_out
from cryptonorm.learn.models.transformer import Encoder

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


def n_patches(window: int, patch_len: int, stride: int) -> int:
    """Patches per series, with the end padding of `stride` bars."""
    return (window + stride - patch_len) // stride + 1


def patchify(series: torch.Tensor, patch_len: int, stride: int) -> torch.Tensor:
    """(N, W) -> (N, P, patch_len): end-padded by repeating the last bar `stride` times, then cut. Patches
    are gathered by a (P, patch_len) index (Tensor.unfold's result, but the TorchScript ONNX exporter
    cannot export unfold with a dynamic batch)."""
    padded = torch.cat([series, series[:, -1:].expand(-1, stride)], dim=1)  # (N, W + stride)
    P = n_patches(series.shape[1], patch_len, stride)
    index = (torch.arange(P, device=series.device) * stride)[:, None] + torch.arange(patch_len, device=series.device)
    return padded[:, index]  # (N, P, patch_len)


class PatchTST(Forecaster):
    """Channel-independent patch transformer; see the module docstring."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        c = m.patchtst
        self.out_dim = out_dim
        self.patch_len, self.stride = c.patch_len, c.stride
        self.n_patches = n_patches(window, c.patch_len, c.stride)
        self.embed = nn.Linear(c.patch_len, c.d_model)
        self.positions = nn.Parameter(torch.empty(self.n_patches, c.d_model).uniform_(-0.02, 0.02))  # (P, d)
        self.drop = nn.Dropout(m.dropout)
        self.encoder = Encoder(m, c.d_model, c.heads, c.ff, c.layers)
        self.flatten_head = nn.Linear(self.n_patches * c.d_model, 1)
        self.head = nn.Linear(n_features, out_dim)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        B, W, F = x.shape
        series = x.transpose(1, 2).reshape(B * F, W)  # (B*F, W): channel independence
        z = self.embed(patchify(series, self.patch_len, self.stride)) + self.positions  # (B*F, P, d)
        z = self.encoder(self.drop(z))  # (B*F, P, d)
        per_feature = self.flatten_head(z.flatten(1)).view(B, F)  # (B, F)
        return squeeze_out(self.head(per_feature))
