"""Every normalization layer, in one place: the factory for `model.norm`, the input norms of
`model.input_norm`, and the inference choices of `model.batch_norm.eval`. Which norm needs what (batch
statistics, a sequence) and where each may sit: the table in config/norm_facts.py; `NORM_FACTORIES` below
is keyed by its names. Imports only torch (and those torch-free facts).

Hidden-layer norms (`model.norm`), built by `make_norm` for a (B, C) or (B, C, T) tensor:
  none, weight  Identity (weight norm lives on the weights, see models.py)
  batch         `BatchNorm`: nn.BatchNorm1d plus the `batch_norm.eval` choices below
  batchrenorm   `BatchRenorm`: Ioffe (2017), "Batch Renormalization", r/d correction with clipped limits
  layer, group, rms, instance   torch's LayerNorm / GroupNorm / RMSNorm / InstanceNorm1d

Input norms (`model.input_norm`, in input_norms.py), applied to the (B, W, F) window before the network:
  revin   `RevIN`: Kim et al. (ICLR 2022), per-sample per-feature window statistics, learnable affine,
          the forecast de-normalized with the statistics of the input feature in the target's units
  dain    `DAIN`: Passalis et al. (IEEE TNNLS 2019), learned adaptive shift, scale and gating

BatchNorm at inference (`model.batch_norm.eval`), for every module with batch statistics (`BatchNorm`,
`BatchRenorm`, `StepBatchNorm` of the recurrent batch-normalized LSTM):
  running      running averages collected during training (torch's default)
  recalibrate  `recalibrate` re-estimates them after training on recent training windows (AdaBN,
               Li et al. 2016): the exact population statistics each layer sees at inference
  batch        statistics of the inference batch itself (a diagnostic: it leaks across the batch)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from cryptonorm.config.norm_facts import BATCH_NORMS

if TYPE_CHECKING:  # the config is only read: norms.py imports only torch and the torch-free norm facts
    from cryptonorm.config import ModelConfig



# ---------------------------------------------------------------- batch statistics shared by the BN variants


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Axes a BatchNorm reduces over: the batch of a (B, C) tensor, batch and time of a (B, C, T) one."""
    return (0,) if x.dim() == 2 else (0, 2)


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(C,) -> broadcastable against x: (1, C) or (1, C, 1)."""
    return v.view(1, -1) if x.dim() == 2 else v.view(1, -1, 1)


def centered_moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over `dims`, the centered x - mean, and the biased variance, in two passes (the mean, then the
    mean of squared deviations; as stable as a one-pass Welford). Mean and variance keep their dims.

    Why not torch.var / var_mean: on CPU (torch 2.13) their kernels took 3.7 ms for a (256, 32, 16) window
    batch over its 32 rows and 0.33 ms for a (256, 128) batch over its rows, against 0.21 ms and 0.03 ms
    here; that alone made RevIN and batch renorm 1.4-2x slower than LayerNorm (benchmarks/bench_norms.py)."""
    mean = x.mean(dim=dims, keepdim=True)
    centered = x - mean
    return mean, centered, (centered * centered).mean(dim=dims, keepdim=True)


def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of x over the batch (and time), and how many values each has."""
    dims = _reduce_dims(x)
    n = x.numel() // x.shape[1]
    if n < 2:
        raise ValueError("batch statistics need at least 2 values per channel (a batch of one sample?)")
    mean, _, var = centered_moments(x, dims)
    return mean.view(-1), var.view(-1), n


def _normalize(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float,
               weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, per channel (mean/var/weight/bias are (C,))."""
    out = (x - _per_channel(mean, x)) * _per_channel(torch.rsqrt(var + eps), x)
    if weight is not None:
        out = out * _per_channel(weight, x)
    if bias is not None:
        out = out + _per_channel(bias, x)
    return out


def _recalibrated(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, eps: float,
                  weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """Recalibration pass: the whole population is one batch. Store its exact statistics as the running
    ones (the variance unbiased, as BatchNorm stores it) and normalize with them, exactly as inference
    will, so that the layers after this one see their inference-time inputs."""
    mean, var, n = _batch_stats(x.double())  # float64: sums over many windows
    with torch.no_grad():
        running_mean.copy_(mean)
        running_var.copy_(var * n / (n - 1))
    return _normalize(x, running_mean, running_var, eps, weight, bias)


class BatchNorm(nn.BatchNorm1d):
    """nn.BatchNorm1d (same parameters, buffers and training behaviour) with `model.batch_norm.eval`:
    `eval_stats = "batch"` normalizes with the inference batch's own statistics, and `recalibrating`
    marks the one-batch pass of `recalibrate`."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 eval_stats: str = "running") -> None:
        super().__init__(channels, eps=eps, momentum=momentum, affine=affine)
        self.eval_stats = eval_stats
        self.recalibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) or (B, C, T)
        assert self.running_mean is not None and self.running_var is not None
        if self.recalibrating:
            x = x.to(self.running_mean.dtype)  # fp32 under bf16 autocast
            return _recalibrated(x, self.running_mean, self.running_var, self.eps, self.weight, self.bias)
        if not self.training and self.eval_stats == "batch":
            x = x.to(self.running_mean.dtype)
            mean, var, _ = _batch_stats(x)  # the batch's own statistics; no running update
            return _normalize(x, mean, var, self.eps, self.weight, self.bias)
        return super().forward(x)


class BatchRenorm(nn.Module):
    """Batch renormalization (Ioffe 2017, Algorithm 1) of a (B, C) or (B, C, T) tensor.

    Training: x_hat = (x - mu_B) / sigma_B * r + d with r = clip(sigma_B / sigma, 1/r_max, r_max) and
    d = clip((mu_B - mu) / sigma, -d_max, d_max), both treated as constants by the gradient (stop_gradient);
    mu, sigma are the running averages. The output then matches the inference transform
    (x - mu) / sigma whenever the clips are inactive, so a layer's output depends less on its batch.
    The limits follow the paper's schedule: r_max = 1 and d_max = 0 (plain BatchNorm) for the first
    `warmup_steps` training steps, then relaxed linearly to `r_max` at step `r_max_steps` and to `d_max`
    at step `d_max_steps` (paper: 5000 / 40k / 25k steps, r_max 3, d_max 5).
    Running statistics are stored as BatchNorm stores them (mean, unbiased variance; sigma =
    sqrt(var + eps)), so `recalibrate` and checkpoints treat both alike.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    steps: torch.Tensor

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, *,
                 r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 5000, r_max_steps: int = 40000,
                 d_max_steps: int = 25000, eval_stats: str = "running") -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.r_max, self.d_max = r_max, d_max
        self.warmup_steps, self.r_max_steps, self.d_max_steps = warmup_steps, r_max_steps, d_max_steps
        self.eval_stats = eval_stats
        self.recalibrating = False
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(channels))  # (C,)
        self.register_buffer("running_var", torch.ones(channels))  # (C,) unbiased
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen (the schedule)

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_max, d_max) for the next training step, as tensors on the buffers' device (no host sync)."""
        s = self.steps.to(self.running_mean.dtype)  # steps taken so far
        r_max = 1.0 + (self.r_max - 1.0) * self._ramp(s, self.r_max_steps)
        return r_max, self.d_max * self._ramp(s, self.d_max_steps)

    def _ramp(self, s: torch.Tensor, end: int) -> torch.Tensor:
        """0 until warmup_steps, then linear to 1 at step `end` (a jump at warmup_steps when end == it)."""
        if end > self.warmup_steps:
            return ((s - self.warmup_steps) / (end - self.warmup_steps)).clamp(0.0, 1.0)
        return (s >= self.warmup_steps).to(s.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) or (B, C, T) -> same
        x = x.to(self.running_mean.dtype)  # statistics in the buffers' precision (fp32 under bf16 autocast)
        if self.recalibrating:
            return _recalibrated(x, self.running_mean, self.running_var, self.eps, self.weight, self.bias)
        if not self.training:
            if self.eval_stats == "batch":
                mean, var, _ = _batch_stats(x)
                return _normalize(x, mean, var, self.eps, self.weight, self.bias)
            return _normalize(x, self.running_mean, self.running_var, self.eps, self.weight, self.bias)
        with torch.no_grad():  # r and d are constants for the gradient (stop_gradient)
            mean, var, _ = _batch_stats(x)  # (C,), (C,) biased: mu_B, sigma_B^2
            run_std = torch.sqrt(self.running_var + self.eps)  # sigma
            r_max, d_max = self.limits()
            r = (torch.sqrt(var + self.eps) / run_std).clamp(min=1.0 / r_max, max=r_max)  # (C,)
            d = ((mean - self.running_mean) / run_std).clamp(min=-d_max, max=d_max)  # (C,)
            self.steps += 1
        # ((x - mu_B) / sigma_B * r + d) * gamma + beta is BatchNorm's training transform with gamma * r and
        # gamma * d + beta as its affine: torch's fused kernel normalizes with the batch statistics (its
        # backward differentiates through them, as Algorithm 1 does) and then moves the running averages
        # as Algorithm 1 does (momentum, unbiased variance), after r and d used the old ones. One kernel
        # each way instead of a dozen elementwise ops: bench_norms.py.
        weight, bias = (r, d) if self.weight is None else (self.weight * r, self.weight * d)
        if self.bias is not None:
            bias = bias + self.bias
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, weight, bias, training=True,
                                        momentum=self.momentum, eps=self.eps)


class StepBatchNorm(nn.Module):
    """BatchNorm of a (B, C) tensor with separate running statistics for each time step t < max_steps.

    Cooijmans et al. (2016) found that sharing statistics across time fails at the first steps, whose
    activations are distributed differently; gamma and beta are shared across time, the statistics are
    not. At inference a step t >= max_steps reuses the statistics of the last trained step.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(
        self,
        channels: int,
        max_steps: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        gamma: float = 0.1,
        learn_beta: bool = True,
        eval_stats: str = "running",
    ) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.max_steps = max_steps
        self.eval_stats = eval_stats
        self.recalibrating = False
        # gamma starts at 0.1 (the paper's choice): unit-variance pre-activations would saturate the gates
        self.weight = nn.Parameter(torch.full((channels,), gamma)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine and learn_beta else None
        self.register_buffer("running_mean", torch.zeros(max_steps, channels))  # (T_max, C)
        self.register_buffer("running_var", torch.ones(max_steps, channels))  # (T_max, C)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # (B, C) at step t -> (B, C)
        s = min(t, self.max_steps - 1)
        x = x.to(self.running_mean.dtype)  # statistics in the buffers' precision (fp32 under bf16 autocast)
        if self.recalibrating and t < self.max_steps:
            return _recalibrated(x, self.running_mean[s], self.running_var[s], self.eps, self.weight, self.bias)
        if self.training or (self.eval_stats == "batch" and not self.recalibrating):
            mean, _, var = centered_moments(x, (0,))  # (1, C) each; var biased, as BatchNorm normalizes with
            mean, var = mean.view(-1), var.view(-1)  # (C,)
            if self.training and t < self.max_steps:  # steps past the trained length are not recorded
                n = x.shape[0]
                with torch.no_grad():  # the running averages store the unbiased variance, as BatchNorm does
                    self.running_mean[s].lerp_(mean.detach(), self.momentum)
                    self.running_var[s].lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean[s], self.running_var[s]
        return _normalize(x, mean, var, self.eps, self.weight, self.bias)


BATCH_STAT_MODULES = (BatchNorm, BatchRenorm, StepBatchNorm)


def uses_batch_statistics(model: nn.Module) -> bool:
    """True if a training forward pass normalizes with statistics of the batch (needs batches >= 2)."""
    return any(isinstance(mod, (nn.BatchNorm1d, *BATCH_STAT_MODULES)) for mod in model.modules())


def eval_uses_batch_statistics(model: nn.Module) -> bool:
    """True if inference normalizes with the batch's statistics (`model.batch_norm.eval: batch`): a forecast then
    depends on the other samples of its batch, and a batch of one sample cannot be normalized."""
    return any(isinstance(mod, BATCH_STAT_MODULES) and mod.eval_stats == "batch" for mod in model.modules())


@torch.no_grad()
def recalibrate(model: nn.Module, windows: torch.Tensor) -> int:
    """AdaBN-style recalibration (Li et al. 2016): with every weight frozen, replace the running statistics
    of each batch-statistics module by the exact population statistics of what it sees at inference on
    `windows` (N, W, F). All N windows go through as ONE batch in eval mode (dropout off); each module in
    turn stores the statistics of its input and normalizes with them, so the modules after it see exactly
    their inference-time inputs (one pass; memory ~ N x W x width). Returns how many modules it set."""
    mods = [m for m in model.modules() if isinstance(m, BATCH_STAT_MODULES)]
    if not mods:
        return 0
    if len(windows) < 2:
        raise ValueError("recalibration needs at least 2 windows")
    was_training = model.training
    model.eval()
    for m in mods:
        m.recalibrating = True
    try:
        model(windows)
    finally:
        for m in mods:
            m.recalibrating = False
        model.train(was_training)
    return len(mods)


# ---------------------------------------------------------------- the factory


def _batch(m: ModelConfig, channels: int) -> nn.Module:
    return BatchNorm(channels, eps=m.norm_eps, momentum=m.batch_norm.momentum, affine=m.norm_affine,
                     eval_stats=m.batch_norm.eval)


def _batchrenorm(m: ModelConfig, channels: int) -> nn.Module:
    r = m.renorm
    return BatchRenorm(channels, eps=m.norm_eps, momentum=m.batch_norm.momentum, affine=m.norm_affine,
                       r_max=r.r_max, d_max=r.d_max, warmup_steps=r.warmup_steps, r_max_steps=r.r_max_steps,
                       d_max_steps=r.d_max_steps, eval_stats=m.batch_norm.eval)


def _group(m: ModelConfig, channels: int) -> nn.Module:
    if channels % m.groups:
        raise ValueError(f"model.groups={m.groups} must divide the width {channels}")
    return nn.GroupNorm(m.groups, channels, eps=m.norm_eps, affine=m.norm_affine)


# model.norm -> the module for a (B, C) or (B, C, T) tensor (keys: config/norm_facts.py NORMS, which says
# what each needs). none/weight are Identity: weight norm lives on the weights (models/). instance uses
# track_running_stats=False: every sample is normalized by its own statistics, in training and at inference
NORM_FACTORIES: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "none": lambda m, c: nn.Identity(),
    "weight": lambda m, c: nn.Identity(),
    "batch": _batch,
    "batchrenorm": _batchrenorm,
    "layer": lambda m, c: nn.LayerNorm(c, eps=m.norm_eps, elementwise_affine=m.norm_affine),
    "group": _group,
    "rms": lambda m, c: nn.RMSNorm(c, eps=m.norm_eps, elementwise_affine=m.norm_affine),
    "instance": lambda m, c: nn.InstanceNorm1d(c, eps=m.norm_eps, affine=m.norm_affine, track_running_stats=False),
}


def make_norm(m: ModelConfig, channels: int) -> nn.Module:
    """The `model.norm` module for a (B, C) or (B, C, T) tensor of `channels` channels."""
    return NORM_FACTORIES[m.norm](m, channels)


class SeqNorm(nn.Module):
    """Apply a norm to a sequence (B, T, C), choosing the axes the norm is defined on.

    batch/batchrenorm normalize each channel over batch x time: the sequence goes in as B * T rows of C
    channels (a view of the contiguous (B, T, C) tensor: the same statistics as BatchNorm of the (B, C, T)
    transpose, without its strided copies, which made BatchNorm 1.5x LayerNorm's step in the LSTM).
    group/instance normalize channels of a (B, C, T) tensor, so the sequence is transposed: group -> over
    (channels of a group) x time per sample; instance -> over time per channel and sample. layer/rms act
    on the last axis, i.e. per step.
    """

    def __init__(self, m: ModelConfig, channels: int) -> None:
        super().__init__()
        self.norm = make_norm(m, channels)
        self.rows = m.norm in BATCH_NORMS
        self.channels_first = m.norm in ("group", "instance")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.rows:
            B, T, C = x.shape
            return self.norm(x.reshape(B * T, C)).view(B, T, C)
        if self.channels_first:
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)
