"""A drift alarm from the network itself: how far the inputs of each batch-statistics layer (BatchNorm,
batch renorm, the recurrent StepBatchNorm) drift from the running statistics the layer normalizes with.

For layer l with running mean mu_c and variance s2_c (per channel c), every value the layer sees of window i
is standardized, z = (x - mu_c) / sqrt(s2_c + eps), and summed per window: S1[i, c] = sum z, S2[i, c] =
sum z^2 over the k values the window gives each channel (1 for a (B, C) input, T for a sequence). Over the
last N windows ending at bar t:
    m_c = sum S1 / (N k)        the standardized mean shift of channel c ((mean - mu_c) / sigma_c)
    r_c = sum S2 / (N k) - m_c^2  the variance ratio var / (s2_c + eps) (biased window variance)
    shift_l = sqrt(mean_c m_c^2),  logvar_l = sqrt(mean_c (ln r_c)^2)   (root mean square over channels)
    alarm = mean over layers of (shift_l + logvar_l)
0 when the last N windows look exactly like the layer's training population; a shift of one running standard
deviation in every channel adds 1, a doubled standard deviation adds ln 4 = 1.39.

The forward pass is the model's own inference (eval mode, `model.bn_eval` as trained): forward pre-hooks
read each layer's input, nothing in the model changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cryptonorm.learn.loop import gather_windows, inference_chunks
from cryptonorm.learn.norms import BATCH_STAT_MODULES, StepBatchNorm, eval_uses_batch_statistics


@dataclass(eq=False)
class LayerSums:
    """Per-window sums of one layer's standardized inputs."""

    name: str  # the module's dotted name in the model
    s1: np.ndarray  # (n, C) float64 sum of z per window and channel
    s2: np.ndarray  # (n, C) float64 sum of z^2
    k: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) values per window and channel


@dataclass(eq=False)
class ForwardPass:
    """What one monitored inference pass gives: the model's raw outputs and each layer's sums."""

    outputs: np.ndarray  # (n,) float64 forecasts (model.to_forecast)
    layers: list[LayerSums]


def batch_stat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer with running statistics, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BATCH_STAT_MODULES)]


def _standardized(mod: nn.Module, x: torch.Tensor, step: int | None, batch: int) -> torch.Tensor:
    """The layer input as (B, k, C) float64, standardized with the layer's running statistics."""
    rm: torch.Tensor = mod.running_mean  # type: ignore[assignment]
    rv: torch.Tensor = mod.running_var  # type: ignore[assignment]
    if step is not None:  # StepBatchNorm: (B, C) at one time step, with that step's statistics
        s = min(step, rm.shape[0] - 1)
        rm, rv = rm[s], rv[s]
        x = x.unsqueeze(1)
    elif x.dim() == 3:  # (B, C, T) -> (B, T, C)
        x = x.transpose(1, 2)
    else:  # (B, C), or a sequence as B*T rows of C channels (SeqNorm): (B, k, C)
        x = x.reshape(batch, -1, x.shape[-1])
    eps = float(mod.eps)  # type: ignore[arg-type]
    return (x.double() - rm.double()) / torch.sqrt(rv.double() + eps)


@torch.no_grad()
def forward_with_sums(model: nn.Module, X: np.ndarray, idx: np.ndarray, window: int,
                      to_forecast: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 4096) -> ForwardPass:
    """Run the model on the windows ending at rows `idx` of X (N, F), collecting each batch-statistics layer's
    per-window sums; `to_forecast` turns the raw output into forecasts."""
    mods = batch_stat_layers(model)
    n = len(idx)
    widths = [int(torch.as_tensor(m.running_mean).shape[-1]) for _, m in mods]  # channels C of each layer
    sums = [LayerSums(name, np.zeros((n, c)), np.zeros((n, c)), np.zeros(n)) for (name, _), c in zip(mods, widths,
                                                                                                   strict=True)]
    state: dict[str, int] = {"a": 0, "e": 0}

    def hook_for(j: int, mod: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            a, e = state["a"], state["e"]
            step = int(args[1]) if isinstance(mod, StepBatchNorm) else None
            z = _standardized(mod, args[0], step, e - a)  # (B, k, C)
            sums[j].s1[a:e] += z.sum(1).cpu().numpy()
            sums[j].s2[a:e] += (z * z).sum(1).cpu().numpy()
            sums[j].k[a:e] += z.shape[1]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(j, m)) for j, (_, m) in enumerate(mods)]
    model.eval()
    dev = next(model.buffers()).device
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32).to(dev)  # (N, F)
    rows = torch.as_tensor(np.asarray(idx, dtype=np.int64)).to(dev)
    offsets = torch.arange(-window + 1, 1, device=dev)  # (W,)
    outs = []
    try:
        for a, e in inference_chunks(n, batch_size, eval_uses_batch_statistics(model)):
            state["a"], state["e"] = a, e
            outs.append(to_forecast(model(gather_windows(Xt, rows[a:e], offsets)).float()))
    finally:
        for h in handles:
            h.remove()
    out = torch.cat(outs).cpu().numpy().astype(np.float64) if outs else np.empty(0)
    return ForwardPass(outputs=out, layers=sums)


def _rolling_sum(a: np.ndarray, window: int) -> np.ndarray:
    """Sum over the `window` rows ending at each row (first axis); NaN before the first full window."""
    c = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])
    out = np.full(a.shape, np.nan)
    if window <= len(a):
        out[window - 1:] = c[window:] - c[:len(a) + 1 - window]
    return out


def layer_drift(s: LayerSums, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(shift, logvar), each (n,): the RMS over channels of the standardized mean shift and of the log
    variance ratio over the last `window` windows (see the module docstring)."""
    cnt = _rolling_sum(s.k, window)[:, None]  # (n, 1): N * k
    m = _rolling_sum(s.s1, window) / cnt  # (n, C)
    r = np.maximum(_rolling_sum(s.s2, window) / cnt - m * m, 1e-12)  # (n, C); floor: a dead channel stays finite
    return np.sqrt(np.mean(m * m, axis=1)), np.sqrt(np.mean(np.log(r) ** 2, axis=1))
