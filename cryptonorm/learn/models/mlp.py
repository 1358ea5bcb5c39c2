"""kind mlp: the flattened window through [Linear -> norm -> activation -> dropout] layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cryptonorm.learn.input_norms import RevIN
from cryptonorm.learn.models.base import ACTIVATIONS, Forecaster, squeeze_out
from cryptonorm.learn.norms import make_norm

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


class MLP(Forecaster):
    """Flattened window -> [Linear -> Norm -> activation -> dropout] x len(hidden) -> Linear."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        self.out_dim = out_dim
        layers: list[nn.Module] = []
        width = n_features * window
        for h in m.hidden:
            linear = nn.Linear(width, h)
            if m.norm == "weight":
                linear = weight_norm(linear, name="weight", dim=0)  # w = g * v / ||v||, per output unit
            layers += [linear, make_norm(m, h), ACTIVATIONS[m.activation](), nn.Dropout(m.dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_dim)
        self.window = window
        # RevIN's gamma/beta act per feature on the window, right before the first Linear: folded into
        # its weight and bias (W1 (z * g + b) + b1 = (W1 * g) z + (W1 b + b1), g and b repeated over the
        # window's rows), the same function and gradients without a backward pass through the (B, W*F)
        # input (the first layer's largest matmul): RevIN cost 1.4x LayerNorm's step unfolded, bench_norms.py
        ri = self.input_norm
        self.folds_input_affine = isinstance(ri, RevIN) and ri.weight is not None and ri.bias is not None
        self._after_first = list(self.body)[1:]  # a plain list: the modules stay registered in `body`

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        flat = x.flatten(1)  # (B, W*F), row-major: column t * F + f is feature f of row t
        if not self.folds_input_affine:
            out = self.head(self.body(flat))  # (B, W*F) -> (B, H) -> (B, out_dim)
        else:
            ri, first = self.input_norm, self.body[0]
            assert isinstance(ri, RevIN) and ri.weight is not None and ri.bias is not None
            assert isinstance(first, nn.Linear)
            weight: torch.Tensor = first.weight  # (H, W*F); computed once (a weight-norm parametrization)
            h = nn.functional.linear(flat, weight * ri.weight.repeat(self.window),
                                     torch.addmv(first.bias, weight, ri.bias.repeat(self.window)))
            for layer in self._after_first:
                h = layer(h)
            out = self.head(h)
        return squeeze_out(out)
