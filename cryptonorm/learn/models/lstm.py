"""kind lstm: stacked LSTM layers with the norm between them, or inside the recurrence.

`model.norm_placement: cell` moves the norm inside the recurrence:
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
from cryptonorm.learn.models.base import Forecaster, squeeze_out
from cryptonorm.learn.norms import SeqNorm, StepBatchNorm

if TYPE_CHECKING:
    from cryptonorm.config import ModelConfig


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


class _RecomputedWeights:
    """Mixin for nn.LSTM / nn.GRU whose weights are recomputed every forward (weight norm parametrizations).

    They re-flatten changed weights into one cuDNN buffer in place (flatten_parameters); on tensors that
    are outputs of the weight-norm parametrization that in-place copy is unsafe for autograd, so it is
    skipped here and cuDNN compacts the weights itself on each call (it may warn once that they are not
    in one contiguous chunk). On the CPU flatten_parameters does nothing anyway.
    """

    def flatten_parameters(self) -> None:
        return None


class _RecomputedWeightsLSTM(_RecomputedWeights, nn.LSTM):
    pass


def plain_rnn(rnn_cls: type[nn.LSTM] | type[nn.GRU], recomputed: type[nn.Module], size: int, hidden: int,
              norm: str) -> nn.Module:
    """One torch recurrent layer (batch first); with norm weight, per-row (per gate unit) weight norm of
    both weight matrices."""
    if norm != "weight":
        return rnn_cls(size, hidden, batch_first=True)
    rnn = weight_norm(recomputed(size, hidden, batch_first=True), name="weight_ih_l0", dim=0)
    return weight_norm(rnn, name="weight_hh_l0", dim=0)


class LSTM(Forecaster):
    """Stacked LSTM layers (one per width in `hidden`), the norm between layers and on the output,
    then a Linear head on the last time step.

    norm_placement "layer": torch's nn.LSTM layers with the norm (or weight norm) around them.
    norm_placement "cell": the recurrent-normalized cells above, normalized inside the recurrence.
    """

    rnn_cls: type[nn.LSTM] | type[nn.GRU] = nn.LSTM  # the GRU reuses everything but the layers
    recomputed_cls: type[nn.Module] = _RecomputedWeightsLSTM
    layer_norm_cell: type[nn.Module] = LayerNormLSTM
    batch_norm_cell: type[nn.Module] = BatchNormLSTM

    def __init__(self, m: ModelConfig, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__(m, n_features)
        self.out_dim = out_dim
        self.rnns = nn.ModuleList()
        self.norms = nn.ModuleList()
        size = n_features
        for h in m.hidden:
            rnn: nn.Module
            if m.norm_placement == "cell" and m.norm == "layer":
                rnn = self.layer_norm_cell(size, h, eps=m.norm_eps, affine=m.norm_affine)
            elif m.norm_placement == "cell" and m.norm == "batch":
                rnn = self.batch_norm_cell(size, h, window, eps=m.norm_eps, momentum=m.batch_norm.momentum,
                                    affine=m.norm_affine, eval_stats=m.batch_norm.eval)
            else:
                rnn = plain_rnn(self.rnn_cls, self.recomputed_cls, size, h, m.norm)
            self.rnns.append(rnn)
            # cells normalize inside the recurrence; a norm on their output would be a second one
            self.norms.append(nn.Identity() if m.norm_placement == "cell" else SeqNorm(m, h))
            size = h
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(size, out_dim)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,) or (B, out_dim)
        for rnn, norm in zip(self.rnns, self.norms, strict=True):
            out = rnn(x)
            x = out[0] if isinstance(out, tuple) else out  # nn.LSTM/GRU return (output, state); (B, T, H)
            x = self.drop(norm(x))
        out = self.head(x[:, -1])  # last time step (B, H) -> (B, out_dim)
        return squeeze_out(out)
