"""The recurrent-normalized cells as they were before the hand-written backward (issue 17): autograd over a
Python loop of small ops, on a cell's own parameters and buffers. The slow reference for tests/test_cells.py
and the "old" column of benchmarks/bench_cells.py; kept out of the package on purpose."""

from __future__ import annotations

import torch

from cryptonorm.learn.models import BatchNormLSTM, LayerNormLSTM


def old_ln_lstm(cell: LayerNormLSTM, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
    """Ba et al. (2016) eq. 20-22, the pre-issue-17 loop (LayerNormLSTM.forward at commit 92c357a)."""
    B, T, _ = x.shape
    H = cell.hidden_size
    gx = cell.ln_x(cell.w_x(x)) + cell.bias  # (B, T, 4H)
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    outs = []
    for t in range(T):
        gates = gx[:, t] + cell.ln_h(cell.w_h(h))  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell.ln_c(c))
        outs.append(h)
    return torch.stack(outs, dim=1)


def old_bn_lstm(cell: BatchNormLSTM, x: torch.Tensor) -> torch.Tensor:  # (B, T, In) -> (B, T, H)
    """Cooijmans et al. (2016) eq. 6-8, the pre-issue-17 loop: StepBatchNorm called step by step, which
    updates the running statistics of each step as it goes."""
    B, T, _ = x.shape
    H = cell.hidden_size
    gx = cell.w_x(x)  # (B, T, 4H)
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    outs = []
    for t in range(T):
        gates = cell.bn_x(gx[:, t], t) + cell.bn_h(cell.w_h(h), t) + cell.bias  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell.bn_c(c, t))
        outs.append(h)
    return torch.stack(outs, dim=1)
