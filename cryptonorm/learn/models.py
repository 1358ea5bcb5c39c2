"""Forecasters whose normalization layer is a config switch: norm factory, MLP, LSTM, recurrent-norm cells.

Every model maps a window of features (B, W, F) to one number per sample (B,): a standardized return or
volatility, or the logit of an up move. Imports only torch.

Normalizations (`model.norm`):
  none      nothing
  batch     BatchNorm over the batch (and over time, for sequences); running averages at inference
  layer     LayerNorm over the channels of each sample (and each time step)
  group     GroupNorm: channels split into `model.groups` groups, normalized per sample
  instance  InstanceNorm over time, per channel and sample (sequences only)
  rms       RMSNorm over the channels (no centring)
  weight    weight normalization of the hidden Linear / LSTM weight matrices (no separate norm module)

`model.norm_placement: cell` (LSTM only) moves the norm inside the recurrence:
  layer     the layer-normalized LSTM of Ba, Kiros & Hinton (2016), "Layer Normalization"
  batch     the recurrent batch-normalized LSTM of Cooijmans et al. (2016), "Recurrent Batch Normalization"
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

if TYPE_CHECKING:  # the config is only read, never needed at run time: models.py imports only torch
    from cryptonorm.config import ModelConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Forecaster(nn.Module):
    """Base of every model: (B, W, F) -> (B,) raw outputs, plus how to turn them into forecasts.

    Training standardizes a regression target with the training split's mean and std (see training.py);
    `y_mean` / `y_std` are buffers, so they travel in the state dict and `to_forecast` undoes it.
    With `output == "logit"` (target.kind direction) `to_forecast` returns probabilities instead; with
    `output == "positive"` (a volatility target predicted as vol or var) the value x = out * y_std + y_mean
    goes through s * (softplus(x / s) + 1e-6), s = y_std / 4: smooth, > 0, and ~x once x is a few s above 0.
    """

    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.output = "value"  # "value" (regression), "logit" (direction) or "positive"; set by training.fit
        self.out_dim = 1  # outputs per sample: (B,) when 1, else (B, out_dim)

    def to_forecast(self, out: torch.Tensor) -> torch.Tensor:
        """Raw model outputs -> forecasts in the target's units (or probabilities for logits)."""
        if self.output == "logit":
            return torch.sigmoid(out)
        value = out * self.y_std + self.y_mean
        if self.output == "positive":
            s = self.y_std / 4.0
            return s * (nn.functional.softplus(value / s) + 1e-6)  # + 1e-6: softplus underflows to 0 in float32
        return value


# ---------------------------------------------------------------- norm factory


def make_norm(m: ModelConfig, channels: int) -> nn.Module:
    """The norm module for a (B, C) or (B, C, T) tensor; Identity for none/weight (weight norm lives on
    the weights). `instance` needs a time axis: only sequence models ask for it."""
    if m.norm in ("none", "weight"):
        return nn.Identity()
    if m.norm == "batch":
        return nn.BatchNorm1d(channels, eps=m.norm_eps, momentum=m.norm_momentum, affine=m.norm_affine)
    if m.norm == "layer":
        return nn.LayerNorm(channels, eps=m.norm_eps, elementwise_affine=m.norm_affine)
    if m.norm == "group":
        if channels % m.groups:
            raise ValueError(f"model.groups={m.groups} must divide the width {channels}")
        return nn.GroupNorm(m.groups, channels, eps=m.norm_eps, affine=m.norm_affine)
    if m.norm == "rms":
        return nn.RMSNorm(channels, eps=m.norm_eps, elementwise_affine=m.norm_affine)
    if m.norm == "instance":
        # track_running_stats=False: every sample is normalized by its own statistics, in training
        # and at inference alike (there is no batch dependence to remove)
        return nn.InstanceNorm1d(channels, eps=m.norm_eps, affine=m.norm_affine, track_running_stats=False)
    raise ValueError(f"unknown model.norm {m.norm!r}")


class SeqNorm(nn.Module):
    """Apply a norm to a sequence (B, T, C), choosing the axes the norm is defined on.

    batch/group/instance normalize channels of a (B, C, T) tensor, so the sequence is transposed:
    batch -> over batch x time per channel; group -> over (channels of a group) x time per sample;
    instance -> over time per channel and sample. layer/rms act on the last axis, i.e. per time step.
    """

    def __init__(self, m: ModelConfig, channels: int) -> None:
        super().__init__()
        self.norm = make_norm(m, channels)
        self.channels_first = m.norm in ("batch", "group", "instance")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.channels_first:
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


# ---------------------------------------------------------------- MLP


class MLP(Forecaster):
    """Flattened window -> [Linear -> Norm -> activation -> dropout] x len(hidden) -> Linear."""

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        out = self.head(self.body(x.flatten(1)))  # (B, W*F) -> (B, H) -> (B, out_dim)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


# ---------------------------------------------------------------- recurrent-normalized cells


class LayerNormLSTM(nn.Module):
    """One layer of the layer-normalized LSTM (Ba et al. 2016, eq. 20-22), as an explicit loop over time.

        gates_t = LN_x(W_x x_t) + LN_h(W_h h_{t-1}) + b          (4H: input, forget, cell, output)
        c_t     = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t     = sigmoid(o) * tanh(LN_c(c_t))

    The two gate pre-activations are normalized separately, each over its whole 4H vector, so one
    term cannot swamp the other. Every LN has its own gain and bias when `affine`.
    """

    def __init__(self, input_size: int, hidden_size: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_x = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.w_h = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        self.ln_x = nn.LayerNorm(4 * hidden_size, eps=eps, elementwise_affine=affine)
        self.ln_h = nn.LayerNorm(4 * hidden_size, eps=eps, elementwise_affine=affine)
        self.ln_c = nn.LayerNorm(hidden_size, eps=eps, elementwise_affine=affine)
        _init_lstm_weights(self.w_x, self.w_h, self.bias, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
        B, T, _ = x.shape
        H = self.hidden_size
        # the input term does not depend on the recurrence: project and normalize all steps at once
        gx = self.ln_x(self.w_x(x)) + self.bias  # (B, T, 4H); LN acts per sample and step
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            gates = gx[:, t] + self.ln_h(self.w_h(h))  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
            outs.append(h)
        return torch.stack(outs, dim=1)  # (B, T, H)


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
    ) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.max_steps = max_steps
        # gamma starts at 0.1 (the paper's choice): unit-variance pre-activations would saturate the gates
        self.weight = nn.Parameter(torch.full((channels,), gamma)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine and learn_beta else None
        self.register_buffer("running_mean", torch.zeros(max_steps, channels))  # (T_max, C)
        self.register_buffer("running_var", torch.ones(max_steps, channels))  # (T_max, C)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # (B, C) at step t -> (B, C)
        s = min(t, self.max_steps - 1)
        x = x.to(self.running_mean.dtype)  # statistics in the buffers' precision (fp32 under bf16 autocast)
        if self.training:
            mean = x.mean(dim=0)  # (C,)
            var = x.var(dim=0, unbiased=False)  # (C,) biased, as BatchNorm normalizes with
            if t < self.max_steps:  # steps past the trained length are not recorded
                n = x.shape[0]
                with torch.no_grad():  # the running averages store the unbiased variance, as BatchNorm does
                    self.running_mean[s].lerp_(mean.detach(), self.momentum)
                    self.running_var[s].lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean[s], self.running_var[s]
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class BatchNormLSTM(nn.Module):
    """One layer of the recurrent batch-normalized LSTM (Cooijmans et al. 2016, eq. 6-8), explicit loop.

        gates_t = BN_h(W_h h_{t-1}; t) + BN_x(W_x x_t; t) + b    (BN_x, BN_h: gamma only, beta = 0)
        c_t     = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t     = sigmoid(o) * tanh(BN_c(c_t; t))                (BN_c: gamma and beta)

    Each BN keeps separate statistics per time step (see StepBatchNorm); gammas start at 0.1.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        max_steps: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_x = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.w_h = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        # the betas of BN_x and BN_h would duplicate b: the paper fixes them at 0
        self.bn_x = StepBatchNorm(4 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False)
        self.bn_h = StepBatchNorm(4 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False)
        self.bn_c = StepBatchNorm(hidden_size, max_steps, eps, momentum, affine)
        _init_lstm_weights(self.w_x, self.w_h, self.bias, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
        B, T, _ = x.shape
        H = self.hidden_size
        gx = self.w_x(x)  # (B, T, 4H): one matmul for all steps; BN_x still per step (own statistics)
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            gates = self.bn_x(gx[:, t], t) + self.bn_h(self.w_h(h), t) + self.bias  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.bn_c(c, t))
            outs.append(h)
        return torch.stack(outs, dim=1)  # (B, T, H)


def _init_lstm_weights(w_x: nn.Linear, w_h: nn.Linear, bias: nn.Parameter, hidden_size: int) -> None:
    """nn.LSTM's uniform(-1/sqrt(H), 1/sqrt(H)) init, with the forget-gate bias at 1 (remember by default)."""
    bound = 1.0 / math.sqrt(hidden_size)
    nn.init.uniform_(w_x.weight, -bound, bound)
    nn.init.uniform_(w_h.weight, -bound, bound)
    with torch.no_grad():
        bias.zero_()
        bias[hidden_size : 2 * hidden_size] = 1.0  # gate order: input, forget, cell, output


# ---------------------------------------------------------------- LSTM


class _RecomputedWeightsLSTM(nn.LSTM):
    """nn.LSTM whose weights are recomputed every forward (weight norm parametrizations).

    nn.LSTM re-flattens changed weights into one cuDNN buffer in place (flatten_parameters); on tensors
    that are outputs of the weight-norm parametrization that in-place copy is unsafe for autograd, so it is
    skipped here and cuDNN compacts the weights itself on each call (it may warn once that they are not
    in one contiguous chunk). On the CPU flatten_parameters does nothing anyway.
    """

    def flatten_parameters(self) -> None:
        return None


class LSTM(Forecaster):
    """Stacked LSTM layers (one per width in `hidden`), the norm between layers and on the output,
    then a Linear head on the last time step.

    norm_placement "layer": torch's nn.LSTM layers with the norm (or weight norm) around them.
    norm_placement "cell": the recurrent-normalized cells above, normalized inside the recurrence.
    """

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.rnns = nn.ModuleList()
        self.norms = nn.ModuleList()
        size = n_features
        for h in m.hidden:
            rnn: nn.Module
            if m.norm_placement == "cell" and m.norm == "layer":
                rnn = LayerNormLSTM(size, h, eps=m.norm_eps, affine=m.norm_affine)
            elif m.norm_placement == "cell" and m.norm == "batch":
                rnn = BatchNormLSTM(size, h, window, eps=m.norm_eps, momentum=m.norm_momentum, affine=m.norm_affine)
            else:
                if m.norm == "weight":  # per-row (per gate unit) weight norm of both weight matrices
                    rnn = weight_norm(_RecomputedWeightsLSTM(size, h, batch_first=True), name="weight_ih_l0", dim=0)
                    rnn = weight_norm(rnn, name="weight_hh_l0", dim=0)
                else:
                    rnn = nn.LSTM(size, h, batch_first=True)
            self.rnns.append(rnn)
            # cells normalize inside the recurrence; a norm on their output would be a second one
            self.norms.append(nn.Identity() if m.norm_placement == "cell" else SeqNorm(m, h))
            size = h
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(size, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        for rnn, norm in zip(self.rnns, self.norms, strict=True):
            out = rnn(x)
            x = out[0] if isinstance(out, tuple) else out  # nn.LSTM returns (output, (h, c)); (B, T, H)
            x = self.drop(norm(x))
        out = self.head(x[:, -1])  # last time step (B, H) -> (B, out_dim)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


# ---------------------------------------------------------------- factory


def build_model(m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> Forecaster:
    """The forecaster described by `m`, for windows of `window` rows of `n_features` features."""
    if n_features < 1 or window < 1:
        raise ValueError(f"need n_features >= 1 and window >= 1, got {n_features} and {window}")
    # the config rejects these already; kept so a hand-built ModelConfig cannot slip through
    if m.norm_placement == "cell" and (m.kind != "lstm" or m.norm not in ("layer", "batch")):
        raise ValueError(f"norm_placement 'cell' needs kind 'lstm' and norm layer/batch, not {m.kind}/{m.norm}")
    if m.kind == "mlp" and m.norm == "instance":
        raise ValueError("model.norm 'instance' needs a sequence: use it with model.kind 'lstm'")
    if m.norm == "instance" and window < 2:
        raise ValueError("model.norm 'instance' normalizes over time: it needs a window of at least 2 rows")
    if m.kind == "mlp":
        return MLP(m, n_features, window, out_dim)
    if m.kind == "lstm":
        return LSTM(m, n_features, window, out_dim)
    raise ValueError(f"unknown model.kind {m.kind!r}")


def uses_batch_statistics(model: nn.Module) -> bool:
    """True if a training forward pass normalizes with statistics of the batch (needs batches >= 2)."""
    return any(isinstance(mod, (nn.BatchNorm1d, StepBatchNorm)) for mod in model.modules())

