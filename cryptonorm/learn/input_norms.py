"""Input norms (`model.input_norm`), applied to the (B, W, F) window before the network. Imports only torch.

  revin   `RevIN`: Kim et al. (ICLR 2022), "Reversible Instance Normalization for Accurate Time-Series
          Forecasting against Distribution Shift": per-sample per-feature window statistics, learnable
          affine, the forecast de-normalized with the statistics of the input feature in the target's units
  dain    `DAIN`: Passalis et al. (IEEE TNNLS 2019), "Deep Adaptive Input Normalization for Time Series
          Forecasting": learned adaptive shift, scale and gating
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.learn.norms import centered_moments

if TYPE_CHECKING:  # the config is only read: this module imports only torch at run time
    from cryptonorm.config import ModelConfig

DAIN_EPS = 1e-8  # the official DAIN code's epsilon (scales at or below it are replaced by 1)


WindowStats = tuple[torch.Tensor, torch.Tensor]  # (mean, std) of each sample's window, each (B, 1, F)


class RevIN(nn.Module):
    """Reversible instance normalization (Kim et al., ICLR 2022) of a (B, W, F) window.

    normalize:    z = (x - mean) / std * gamma + beta, mean and std = sqrt(var + eps) per sample and
                  feature over the W rows of the window (biased variance), gamma/beta learnable (F,)
    denormalize:  the inverse, x = (z - beta) / gamma * std + mean, applied to the forecast as if it were
                  one more value of the target feature `target_index` (the input column in the target's
                  units). `target_scale`/`target_shift` map that column from the scaler's units back to raw
                  units (raw = x * scale + shift), where the target is measured.

    The target feature is set after construction (`set_target`, by training) and travels in the state dict.
    """

    target_index: torch.Tensor
    target_scale: torch.Tensor
    target_shift: torch.Tensor

    def __init__(self, n_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(n_features)) if affine else None
        self.register_buffer("target_index", torch.tensor(-1, dtype=torch.long))  # -1: no de-normalization
        self.register_buffer("target_scale", torch.ones(()))
        self.register_buffer("target_shift", torch.zeros(()))
        self.target: int | None = None  # python mirror of target_index: forward never syncs with the device
        self.register_load_state_dict_post_hook(lambda module, _keys: module._mirror_target())

    def _mirror_target(self) -> None:
        i = int(self.target_index)
        self.target = i if i >= 0 else None

    def set_target(self, index: int | None, scale: float = 1.0, shift: float = 0.0) -> None:
        """De-normalize forecasts as values of input column `index` (None: do not de-normalize)."""
        self.target_index.fill_(-1 if index is None else index)
        self.target_scale.fill_(scale)
        self.target_shift.fill_(shift)
        self._mirror_target()

    def normalize(self, x: torch.Tensor, affine: bool = True) -> tuple[torch.Tensor, WindowStats]:
        """(B, W, F) -> normalized (B, W, F) and the window statistics for `invert`. `affine=False` leaves
        gamma/beta out (for a caller that applies them itself: the MLP folds them into its first layer)."""
        mean, centered, var = centered_moments(x, (1,))  # (B, 1, F), (B, W, F), (B, 1, F)
        std = torch.sqrt(var + self.eps)  # (B, 1, F)
        if affine and self.weight is not None and self.bias is not None:
            return torch.addcmul(self.bias, centered, self.weight / std), (mean, std)  # gain folded in
        return centered / std, (mean, std)

    def invert(self, z: torch.Tensor, stats: WindowStats) -> torch.Tensor:
        """Inverse of `normalize` for a (B, W, F) tensor: returns the input."""
        mean, std = stats
        if self.weight is not None and self.bias is not None:
            z = (z - self.bias) / (self.weight + self.eps * self.eps)  # RevIN's guard against a zero gain
        return z * std + mean

    def denormalize(self, out: torch.Tensor, stats: WindowStats) -> torch.Tensor:
        """Forecasts (B,) or (B, K) in the normalized units of the target feature -> raw target units."""
        j = self.target
        assert j is not None, "denormalize needs a target feature (set_target)"
        mean, std = stats[0][:, 0, j], stats[1][:, 0, j]  # (B,)
        if out.dim() == 2:
            mean, std = mean[:, None], std[:, None]
        if self.weight is not None and self.bias is not None:
            out = (out - self.bias[j]) / (self.weight[j] + self.eps * self.eps)
        return (out * std + mean) * self.target_scale + self.target_shift


class DAIN(nn.Module):
    """Deep adaptive input normalization (Passalis et al., IEEE TNNLS 2019) of a (B, W, F) window, the
    paper's full mode (three sub-layers, each fed a summary of the window over its W rows):

        shift:  a = W_a mean_t(x)                     x1 = x - a          (W_a: F x F, starts at I)
        scale:  b = W_b sqrt(mean_t(x1^2) + eps)      x2 = x1 / b         (W_b: F x F, starts at I;
                                                                           b <= eps is replaced by 1)
        gate:   g = sigmoid(W_c mean_t(x2) + c)       x3 = x2 * g         (W_c, c: a Linear)

    Nothing is de-normalized: the forecast is in the target's units already. The paper trains the three
    sub-layers at smaller learning rates; here they share the model's (train.lr).
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.shift = nn.Linear(n_features, n_features, bias=False)
        self.scale = nn.Linear(n_features, n_features, bias=False)
        self.gate = nn.Linear(n_features, n_features)
        with torch.no_grad():  # start as plain per-window standardization
            self.shift.weight.copy_(torch.eye(n_features))
            self.scale.weight.copy_(torch.eye(n_features))

    def normalize(self, x: torch.Tensor, affine: bool = True) -> tuple[torch.Tensor, None]:
        """(B, W, F) -> (B, W, F); no statistics to undo. (`affine` is RevIN's switch; DAIN has no
        separate affine and ignores it.)

        The three sub-layers need only each window's mean m and biased variance v per feature, because
        mean_t((x - a)^2) = v + (m - a)^2 and mean_t((x - a) / b) = (m - a) / b: the output is then one
        per-window affine map of x, x3 = (x - a) * g / b, with a single pass over the (B, W, F) tensor
        (forward and backward) instead of five. Same values as the sub-layers applied in turn."""
        m, centered, v = centered_moments(x, (1,))  # (B, 1, F), (B, W, F), (B, 1, F)
        m, v = m[:, 0], v[:, 0]  # (B, F)
        a = self.shift(m)  # (B, F) adaptive shift
        ma = m - a  # (B, F) the shifted window's mean
        b = self.scale(torch.sqrt(v + ma * ma + DAIN_EPS))  # (B, F) adaptive scale of the shifted window
        b = torch.where(b <= DAIN_EPS, torch.ones_like(b), b)
        g = torch.sigmoid(self.gate(ma / b))  # (B, F) gate, fed the scaled window's mean
        s = g / b  # (B, F)
        return torch.addcmul((ma * s)[:, None, :], centered, s[:, None, :]), None  # (x - a) * s


def make_input_norm(m: ModelConfig, n_features: int) -> RevIN | DAIN | None:
    """The module for `model.input_norm`, or None."""
    if m.input_norm == "none":
        return None
    if m.input_norm == "revin":
        return RevIN(n_features, eps=m.norm_eps, affine=m.input_norm_affine)
    if m.input_norm == "dain":
        return DAIN(n_features)
    raise ValueError(f"unknown model.input_norm {m.input_norm!r}")


def revin_target_feature(feature_names: list[str], target_kind: str, horizon: int,
                         vol_form: str = "vol") -> str | None:
    """The input column in the target's units, whose window statistics de-normalize a RevIN forecast:
    `logret_{horizon}` for a return target (the same log return, h bars earlier); for a volatility target
    predicted as a volatility (target.vol_form vol) the `vol_{n}` with n closest to the horizon (both
    per-bar volatilities of 1-bar log returns; ties: the shorter n). None for direction targets (a logit
    has no units), for variances and log variances, or when no such column is an input."""
    if target_kind == "return":
        name = f"logret_{horizon}"
        return name if name in feature_names else None
    if target_kind == "volatility" and vol_form == "vol":
        vols = [(abs(int(n[4:]) - horizon), int(n[4:]), n) for n in feature_names
                if n.startswith("vol_") and n[4:].isdigit()]
        return min(vols)[2] if vols else None
    return None

