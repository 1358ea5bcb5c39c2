"""The base of every forecaster: (B, W, F) windows -> (B,) raw outputs, the input norm and the output map."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.input_norms import DAIN, RevIN, make_input_norm

if TYPE_CHECKING:  # the config is only read, never needed at run time: models import only torch
    from cryptonorm.config import ModelConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def squeeze_out(out: torch.Tensor) -> torch.Tensor:
    """(B, 1) -> (B,); (B, out_dim > 1) unchanged."""
    return out.squeeze(-1) if out.shape[-1] == 1 else out


class Forecaster(nn.Module):
    """Base of every model: (B, W, F) -> (B,) raw outputs, plus how to turn them into forecasts.

    Training standardizes a regression target with the training split's mean and std (see training.py);
    `y_mean` / `y_std` are buffers, so they travel in the state dict and `to_forecast` undoes it.
    With `output == "logit"` (target.kind direction) `to_forecast` returns probabilities instead; with
    `output == "positive"` (a volatility target predicted as vol or var) the value x = out * y_std + y_mean
    goes through s * (softplus(x / s) + 1e-6), s = y_std / 4: smooth, > 0, and ~x once x is a few s above 0.
    `input_norm` (RevIN / DAIN, or None) normalizes the window before the network (`core`); a RevIN with
    a target feature de-normalizes the network's output into raw target units, which are then
    standardized like the target, so the loss and `to_forecast` see the same units with or without it.
    """

    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, m: ModelConfig | None = None, n_features: int = 0) -> None:
        super().__init__()
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.output = "value"  # "value" (regression), "logit" (direction) or "positive"; set by training.fit
        self.out_dim = 1  # outputs per sample: (B,) when 1, else (B, out_dim)
        # without a config (a bare Forecaster, e.g. for its output map) there is no input norm
        self.input_norm: RevIN | DAIN | None = make_input_norm(m, n_features) if m is not None else None
        self.folds_input_affine = False  # True: `core` applies RevIN's gamma/beta itself (the MLP)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        if self.input_norm is None:
            return self.core(x)
        z, stats = self.input_norm.normalize(x, affine=not self.folds_input_affine)  # (B, W, F)
        out = self.core(z)
        if isinstance(self.input_norm, RevIN) and self.input_norm.target is not None and stats is not None:
            raw = self.input_norm.denormalize(out.to(stats[0].dtype), stats)  # raw target units (fp32 under bf16)
            out = (raw - self.y_mean) / self.y_std  # standardized, as the loss expects
        return out

    def to_forecast(self, out: torch.Tensor) -> torch.Tensor:
        """Raw model outputs -> forecasts in the target's units (or probabilities for logits)."""
        if self.output == "logit":
            return torch.sigmoid(out)
        value = out * self.y_std + self.y_mean
        if self.output == "positive":
            s = self.y_std / 4.0
            return s * (nn.functional.softplus(value / s) + 1e-6)  # + 1e-6: softplus underflows to 0 in float32
        return value
