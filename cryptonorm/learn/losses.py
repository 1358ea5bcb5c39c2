"""Training losses (`target.loss`): mse, huber, bce, and for volatility targets qlike and nll.

Every loss takes the model's raw outputs `out` (B,) and the standardized labels `y_z` (B,) (training.py
standardizes the target with the training split's mean and std). Regression losses compare the model's
forecast, mapped back through `Forecaster.to_forecast` (so a positive output map is part of what is
trained) and standardized again, with `y_z`; for outputs without a map that is `out` itself.

Volatility losses work on the variance. With f the forecast variance and v the label's realized variance
(both per bar; `target.vol_form` says how to get them from the forecast and the label):
    qlike   v / f - log(v / f) - 1                 (Patton 2011; 0 at f = v, robust to noise in v)
    nll     0.5 * (log f + v / f)                  Gaussian negative log-likelihood of the h returns
                                                   behind v (mean zero, variance f), per return
For a Gaussian, nll = 0.5 * (qlike + log v + 1): the same minimizer and gradient directions as qlike, half
the size, shifted by a constant of the label. Both are "robust" in Patton's sense (a noisy but unbiased
proxy v ranks forecasts as the true variance would); MSE on the variance is too, MSE on vol is not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cryptonorm.errors import ConfigError

HUBER_DELTA = 1.0  # in standard deviations of the (standardized) training target
LOSSES = ("mse", "huber", "bce", "qlike", "nll")
_LOG_RATIO_MAX = 30.0  # exp(30) ~ 1e13: finite in float32, far beyond any useful forecast error


def log_variance(value: torch.Tensor, form: str) -> torch.Tensor:
    """log of the per-bar variance from a value in `target.vol_form` units (vol, log_var or var)."""
    if form == "log_var":
        return value
    tiny = torch.finfo(value.dtype).tiny
    if form == "vol":
        return 2.0 * torch.log(value.abs().clamp_min(tiny))
    if form == "var":
        return torch.log(value.clamp_min(tiny))
    raise ConfigError(f"target.vol_form: got {form!r}; allowed: vol, log_var, var")


class RegressionLoss(nn.Module):
    """A loss on the forecast in target units: `to_forecast(out)` vs the label `y_z * std + mean`."""

    def __init__(self, name: str, to_forecast: Callable[[torch.Tensor], torch.Tensor], mean: float, std: float,
                 form: str = "vol") -> None:
        super().__init__()
        self.name, self.to_forecast, self.mean, self.std, self.form = name, to_forecast, mean, std, form
        self.base: nn.Module | None = (nn.MSELoss() if name == "mse"
                                       else nn.HuberLoss(delta=HUBER_DELTA) if name == "huber" else None)

    def forward(self, out: torch.Tensor, y_z: torch.Tensor) -> torch.Tensor:
        value = self.to_forecast(out)  # (B,) forecast in the target's units (vol_form for volatility)
        if self.base is not None:
            return self.base((value - self.mean) / self.std, y_z)  # type: ignore[no-any-return]
        lf = log_variance(value, self.form)  # (B,) log forecast variance
        lv = log_variance(y_z * self.std + self.mean, self.form)  # (B,) log realized variance of the label
        d = (lv - lf).clamp(max=_LOG_RATIO_MAX)  # log(v / f)
        if self.name == "qlike":
            return (torch.exp(d) - d - 1.0).mean()
        return (0.5 * (lf + torch.exp(d))).mean()  # nll: 0.5 * (log f + v / f)


def make_loss(name: str, to_forecast: Callable[[torch.Tensor], torch.Tensor] | None = None, mean: float = 0.0,
              std: float = 1.0, form: str = "vol") -> nn.Module:
    """The loss for cfg.target.resolved_loss (see the module docstring); bce acts on logits."""
    if name == "bce":
        return nn.BCEWithLogitsLoss()  # the model outputs logits; predict() applies the sigmoid
    if name not in LOSSES:
        raise ConfigError(f"target.loss: got {name!r}; allowed: {', '.join(LOSSES)}")
    fc = to_forecast if to_forecast is not None else (lambda out: out * std + mean)
    return RegressionLoss(name, fc, mean, std, form)
