"""Forecasters whose normalization layer is a config switch: MLP, LSTM, recurrent-norm cells.

Every model maps a window of features (B, W, F) to one number per sample (B,): a standardized return or
volatility, or the logit of an up move. Imports only torch. The norm layers themselves live in norms.py
(`model.norm`, `model.input_norm`, `model.bn_eval`); the README's table says what each normalizes.

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

from cryptonorm.learn.cells import NormSpec, batch_spec, run_cell, step_batch_norm_all, use_fast_path
from cryptonorm.learn.input_norms import DAIN, RevIN, make_input_norm
from cryptonorm.learn.norms import BATCH_NORMS, SeqNorm, StepBatchNorm, make_norm

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


# ---------------------------------------------------------------- MLP


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
        return out.squeeze(-1) if out.shape[-1] == 1 else out


# ---------------------------------------------------------------- recurrent-normalized cells


class LayerNormLSTM(nn.Module):
    """One layer of the layer-normalized LSTM (Ba et al. 2016, eq. 20-22).

        gates_t = LN_x(W_x x_t) + LN_h(W_h h_{t-1}) + b          (4H: input, forget, cell, output)
        c_t     = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t     = sigmoid(o) * tanh(LN_c(c_t))

    The two gate pre-activations are normalized separately, each over its whole 4H vector, so one
    term cannot swamp the other. Every LN has its own gain and bias when `affine`. The loop over time
    runs with a hand-written backward (cells.py); `forward_loop` is the same as plain autograd ops.
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
        if not use_fast_path(self, x):
            return self.forward_loop(x)
        # the input term does not depend on the recurrence: project and normalize all steps at once
        gx = self.ln_x(self.w_x(x)) + self.bias  # (B, T, 4H); LN per sample and step
        eps = self.ln_h.eps
        out = run_cell(gx.transpose(0, 1), self.w_h.weight, NormSpec("layer", eps), (self.ln_h.weight, self.ln_h.bias),
                       NormSpec("layer", eps), (self.ln_c.weight, self.ln_c.bias))
        return out.transpose(0, 1)  # (B, T, H)

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
        """The same cell as a Python loop of autograd ops (tracing and torch.compile follow it)."""
        gx = self.ln_x(self.w_x(x)) + self.bias  # (B, T, 4H)
        h = c = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for gx_t in gx.unbind(1):  # unbind, not gx[:, t]: one backward node for all steps
            gates = gx_t + self.ln_h(self.w_h(h))  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
            outs.append(h)
        return torch.stack(outs, dim=1)  # (B, T, H)


class BatchNormLSTM(nn.Module):
    """One layer of the recurrent batch-normalized LSTM (Cooijmans et al. 2016, eq. 6-8).

        gates_t = BN_h(W_h h_{t-1}; t) + BN_x(W_x x_t; t) + b    (BN_x, BN_h: gamma only, beta = 0)
        c_t     = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t     = sigmoid(o) * tanh(BN_c(c_t; t))                (BN_c: gamma and beta)

    Each BN keeps separate statistics per time step (see StepBatchNorm); gammas start at 0.1. BN_x runs
    for all steps at once; the loop over time has a hand-written backward (cells.py).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        max_steps: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        eval_stats: str = "running",
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_x = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.w_h = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        # the betas of BN_x and BN_h would duplicate b: the paper fixes them at 0
        self.bn_x = StepBatchNorm(4 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False,
                                  eval_stats=eval_stats)
        self.bn_h = StepBatchNorm(4 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False,
                                  eval_stats=eval_stats)
        self.bn_c = StepBatchNorm(hidden_size, max_steps, eps, momentum, affine, eval_stats=eval_stats)
        _init_lstm_weights(self.w_x, self.w_h, self.bias, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
        # one training sample (variance 0) and recalibration are StepBatchNorm's own cases: the plain loop
        if not use_fast_path(self, x) or (self.training and x.shape[0] < 2) or self.bn_x.recalibrating:
            return self.forward_loop(x)
        # BN_x of every step at once (each step over the batch, with its own statistics)
        gx = step_batch_norm_all(self.bn_x, self.w_x(x)) + self.bias  # (B, T, 4H)
        out = run_cell(gx.transpose(0, 1), self.w_h.weight, batch_spec(self.bn_h), (self.bn_h.weight, self.bn_h.bias),
                       batch_spec(self.bn_c), (self.bn_c.weight, self.bn_c.bias))
        return out.transpose(0, 1)  # (B, T, H)

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
        """The same cell as a Python loop of autograd ops (tracing and torch.compile follow it)."""
        gx = self.w_x(x)  # (B, T, 4H): one matmul for all steps; BN_x still per step (own statistics)
        h = c = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for t, gx_t in enumerate(gx.unbind(1)):
            gates = self.bn_x(gx_t, t) + self.bn_h(self.w_h(h), t) + self.bias  # (B, 4H)
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
        super().__init__(m, n_features)
        self.out_dim = out_dim
        self.rnns = nn.ModuleList()
        self.norms = nn.ModuleList()
        size = n_features
        for h in m.hidden:
            rnn: nn.Module
            if m.norm_placement == "cell" and m.norm == "layer":
                rnn = LayerNormLSTM(size, h, eps=m.norm_eps, affine=m.norm_affine)
            elif m.norm_placement == "cell" and m.norm == "batch":
                rnn = BatchNormLSTM(size, h, window, eps=m.norm_eps, momentum=m.norm_momentum, affine=m.norm_affine,
                                    eval_stats=m.bn_eval)
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

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
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
    if m.input_norm != "none" and window < 2:
        raise ValueError(f"model.input_norm {m.input_norm!r} normalizes each window over time: it needs a "
                         "window of at least 2 rows")
    if m.bn_eval != "running" and m.norm not in BATCH_NORMS:
        raise ValueError(f"model.bn_eval {m.bn_eval!r} needs a norm with batch statistics, not {m.norm!r}")
    if m.kind == "mlp":
        return MLP(m, n_features, window, out_dim)
    if m.kind == "lstm":
        return LSTM(m, n_features, window, out_dim)
    raise ValueError(f"unknown model.kind {m.kind!r}")

