"""kind gru: stacked GRU layers (Cho et al. 2014) with `model.norm` between them like the LSTM, or inside
the recurrence (`model.norm_placement: cell`).

Between layers everything but the recurrent layer is the LSTM's (lstm.py): the norm on each layer's
(B, T, H) output (SeqNorm), weight norm on both weight matrices for norm weight, dropout, and a Linear head on
the last step. With norm none one layer is exactly torch.nn.GRU (tests/test_zoo.py).

Inside the cell, torch's GRU equations with the two gate pre-activations normalized separately, as the
LN-/BN-LSTM cells do (Ba et al. 2016; Cooijmans et al. 2016, per-step statistics, gammas at 0.1):

    gx = N_x(W_x x_t) + b        gh = N_h(W_h h_{t-1})          (3H each: reset, update, new)
    r = sigmoid(gx_r + gh_r)     z = sigmoid(gx_z + gh_z)       n = tanh(gx_n + r * gh_n)
    h_t = (1 - z) * n + z * h_{t-1}

These cells run as a loop of autograd ops (the LSTM cells' hand-written backward, cells.py, is not
ported to the GRU).
"""

from __future__ import annotations

import torch
from torch import nn

from cryptonorm.learn.models.lstm import LSTM, _RecomputedWeights
from cryptonorm.learn.norms import StepBatchNorm


class _RecomputedWeightsGRU(_RecomputedWeights, nn.GRU):
    pass


def _gru_step(gx_t: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU update from the normalized input and hidden pre-activations, (B, 3H) each -> (B, H)."""
    xr, xz, xn = gx_t.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


class _GRUCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_x = nn.Linear(input_size, 3 * hidden_size, bias=False)
        self.w_h = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(3 * hidden_size))
        bound = hidden_size**-0.5  # nn.GRU's init
        nn.init.uniform_(self.w_x.weight, -bound, bound)
        nn.init.uniform_(self.w_h.weight, -bound, bound)


class LayerNormGRU(_GRUCell):
    """One layer-normalized GRU layer: (B, T, In) -> (B, T, H)."""

    def __init__(self, input_size: int, hidden_size: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(input_size, hidden_size)
        self.ln_x = nn.LayerNorm(3 * hidden_size, eps=eps, elementwise_affine=affine)
        self.ln_h = nn.LayerNorm(3 * hidden_size, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = self.ln_x(self.w_x(x)) + self.bias  # (B, T, 3H): all steps at once
        h = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for gx_t in gx.unbind(1):
            h = _gru_step(gx_t, self.ln_h(self.w_h(h)), h)
            outs.append(h)
        return torch.stack(outs, dim=1)


class BatchNormGRU(_GRUCell):
    """One recurrent batch-normalized GRU layer (per-step statistics): (B, T, In) -> (B, T, H)."""

    def __init__(self, input_size: int, hidden_size: int, max_steps: int, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, eval_stats: str = "running") -> None:
        super().__init__(input_size, hidden_size)
        # betas would duplicate the bias: fixed at 0, as in the BN-LSTM
        self.bn_x = StepBatchNorm(3 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False,
                                  eval_stats=eval_stats)
        self.bn_h = StepBatchNorm(3 * hidden_size, max_steps, eps, momentum, affine, learn_beta=False,
                                  eval_stats=eval_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = self.w_x(x)  # (B, T, 3H)
        h = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for t, gx_t in enumerate(gx.unbind(1)):
            h = _gru_step(self.bn_x(gx_t, t) + self.bias, self.bn_h(self.w_h(h), t), h)
            outs.append(h)
        return torch.stack(outs, dim=1)


class GRU(LSTM):
    """Stacked GRU layers (one per width in `hidden`), the norm between layers or in the cells, a Linear head."""

    rnn_cls = nn.GRU
    recomputed_cls = _RecomputedWeightsGRU
    layer_norm_cell = LayerNormGRU
    batch_norm_cell = BatchNormGRU
