"""The training loop's parts (learn/loop.py): validation runs without autograd."""

from __future__ import annotations

import torch
from torch import nn

from cryptonorm.config import ModelConfig
from cryptonorm.learn.loop import Batches, evaluate
from cryptonorm.learn.models import build_model

torch.set_num_threads(1)


def _batches(n_rows: int, n_val: int, window: int, n_features: int) -> Batches:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n_rows, n_features, generator=g)  # (N, F)
    y = torch.randn(n_rows, generator=g)  # (N,)
    val = torch.arange(n_rows - n_val, n_rows)  # (n_val,) END rows
    return Batches(X, y, val[:0], val, torch.arange(-window + 1, 1), batch_size=8, n_batches=0, y_mean=0.0,
                   y_std=1.0)


def test_validation_builds_no_graph_in_any_chunk() -> None:
    """Every chunk of `evaluate` runs with autograd off (issue 23: the graph of every chunk was kept), gives
    the loss of the same forward with autograd on, and leaves the model in training mode."""
    torch.manual_seed(0)
    m = ModelConfig.model_validate({"kind": "lstm", "norm": "layer", "hidden": [8, 8]})
    model = build_model(m, 3, 5)
    data = _batches(60, 50, 5, 3)
    seen: list[bool] = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(torch.is_grad_enabled()))
    loss = evaluate(model, data, nn.MSELoss(), batch_size=16, use_bf16=False)
    assert seen == [False, False, False, False]  # chunks of 16, 16, 16 and 2 windows
    assert model.training
    model.eval()
    windows = data.X[data.val_idx[:, None] + data.offsets]  # (50, 5, 3), every window at once
    out = model(windows)
    assert out.requires_grad  # the same forward with autograd on
    expected = nn.MSELoss()(out, data.y[data.val_idx]).detach()
    assert abs(loss - float(expected)) <= 1e-6 * abs(float(expected))
