"""Models: shapes for every kind x norm, eval-mode batch independence, and the recurrent-norm cells
checked against slow per-element float64 references (outputs, gradients, running statistics)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from cryptonorm.config import ModelConfig
from cryptonorm.learn.models import LSTM, MLP, BatchNormLSTM, LayerNormLSTM, build_model
from cryptonorm.learn.norms import StepBatchNorm, uses_batch_statistics

torch.set_num_threads(1)

MLP_NORMS = ["none", "batch", "layer", "group", "rms", "weight"]
LSTM_NORMS = ["none", "batch", "layer", "group", "instance", "rms", "weight"]
# (kind, norm, placement): every combination the config accepts
COMBOS = (
    [("mlp", n, "layer") for n in MLP_NORMS]
    + [("lstm", n, "layer") for n in LSTM_NORMS]
    + [("lstm", "layer", "cell"), ("lstm", "batch", "cell")]
)
IDS = [f"{k}-{n}-{p}" for k, n, p in COMBOS]


def make_cfg(kind: str, norm: str, placement: str = "layer", **kw: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"kind": kind, "norm": norm, "norm_placement": placement, "hidden": [8, 4], "groups": 2, **kw}
    )


@pytest.mark.parametrize(("kind", "norm", "placement"), COMBOS, ids=IDS)
def test_output_shapes(kind: str, norm: str, placement: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_cfg(kind, norm, placement), n_features=3, window=6)
    assert isinstance(model, MLP if kind == "mlp" else LSTM)
    x = torch.randn(5, 6, 3)  # (B, W, F)
    assert model(x).shape == (5,)
    assert build_model(make_cfg(kind, norm, placement), 3, 6, out_dim=2)(x).shape == (5, 2)
    assert uses_batch_statistics(model) == (norm == "batch")


@pytest.mark.parametrize(("kind", "norm", "placement"), COMBOS, ids=IDS)
def test_eval_mode_does_not_depend_on_the_batch(kind: str, norm: str, placement: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_cfg(kind, norm, placement, dropout=0.3), n_features=3, window=6)
    # a few training passes so BatchNorm's running averages are not the trivial (0, 1)
    for _ in range(3):
        model(torch.randn(16, 6, 3) * 2 + 0.5)
    model.eval()
    x = torch.randn(7, 6, 3)
    together = model(x)  # (7,)
    for i in range(7):
        alone = model(x[i : i + 1])  # (1,)
        torch.testing.assert_close(alone, together[i : i + 1], rtol=1e-5, atol=1e-6)
    # and a batch's results do not change when other samples change
    other = x.clone()
    other[1:] = torch.randn(6, 6, 3) * 10
    torch.testing.assert_close(model(other)[0], together[0], rtol=1e-5, atol=1e-6)


def test_norm_modules_are_where_the_config_says() -> None:
    mlp = build_model(make_cfg("mlp", "group"), 3, 6)
    assert [m.num_groups for m in mlp.modules() if isinstance(m, nn.GroupNorm)] == [2, 2]
    wn = build_model(make_cfg("mlp", "weight"), 3, 6)
    assert isinstance(wn, MLP)
    hidden = [m for m in wn.body if isinstance(m, nn.Linear)]
    assert len(hidden) == 2 and all(parametrize.is_parametrized(m, "weight") for m in hidden)
    lstm = build_model(make_cfg("lstm", "weight"), 3, 6)
    assert isinstance(lstm, LSTM)
    for rnn in lstm.rnns:
        assert parametrize.is_parametrized(rnn, "weight_ih_l0") and parametrize.is_parametrized(rnn, "weight_hh_l0")
    rms = build_model(make_cfg("lstm", "rms", norm_affine=False), 3, 6)
    assert sum(isinstance(m, nn.RMSNorm) for m in rms.modules()) == 2
    assert not any(p.shape == (8,) for n, p in rms.named_parameters() if "norm" in n)  # no affine gains
    bn = build_model(make_cfg("lstm", "batch", "cell"), 3, 6)
    steps = [m for m in bn.modules() if isinstance(m, StepBatchNorm)]
    assert len(steps) == 6 and all(m.running_mean.shape[0] == 6 for m in steps)  # 3 per layer, 6 steps
    assert all(m.weight is not None and torch.all(m.weight == 0.1) for m in steps)  # gamma starts at 0.1


def test_weight_norm_lstm_trains_its_direction_and_gain() -> None:
    torch.manual_seed(0)
    model = build_model(make_cfg("lstm", "weight"), 3, 6)
    model(torch.randn(4, 6, 3)).sum().backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "rnns.0.parametrizations.weight_ih_l0.original0" in names  # g
    assert "rnns.0.parametrizations.weight_hh_l0.original1" in names  # v


def test_build_model_rejects_bad_combinations_even_unvalidated() -> None:
    for bad in (
        ModelConfig.model_construct(kind="mlp", norm="layer", norm_placement="cell"),
        ModelConfig.model_construct(kind="lstm", norm="group", norm_placement="cell"),
        ModelConfig.model_construct(kind="mlp", norm="instance"),
    ):
        with pytest.raises(ValueError):
            build_model(bad, 3, 6)


# ---------------------------------------------------------------- slow references (float64, per element)

Scalar = torch.Tensor  # a 0-dim float64 tensor, so the references are differentiable


def _sigmoid(v: Scalar) -> Scalar:
    return 1.0 / (1.0 + torch.exp(-v))


def _dot(w: torch.Tensor, row: int, vec: list[Scalar]) -> Scalar:
    total: Scalar = torch.zeros((), dtype=torch.float64)
    for k, v in enumerate(vec):
        total = total + w[row, k] * v
    return total


def _layer_norm(a: list[Scalar], gain: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> list[Scalar]:
    n = len(a)
    mu = sum(a, torch.zeros((), dtype=torch.float64)) / n
    var = sum(((v - mu) ** 2 for v in a), torch.zeros((), dtype=torch.float64)) / n
    out = []
    for j, v in enumerate(a):
        z = (v - mu) / torch.sqrt(var + eps)
        out.append(z * gain[j] + bias[j] if gain is not None and bias is not None else z)
    return out


def ln_lstm_reference(cell: LayerNormLSTM, x: torch.Tensor) -> torch.Tensor:
    """Ba et al. (2016) eq. 20-22, one scalar at a time: gates = LN(Wx x) + LN(Wh h) + b; h = o*tanh(LN(c))."""
    B, T, In = x.shape
    H = cell.hidden_size
    wx, wh, b = cell.w_x.weight, cell.w_h.weight, cell.bias
    eps = cell.ln_x.eps
    rows = []
    for s in range(B):
        h = [torch.zeros((), dtype=torch.float64) for _ in range(H)]
        c = [torch.zeros((), dtype=torch.float64) for _ in range(H)]
        steps = []
        for t in range(T):
            xt = [x[s, t, k] for k in range(In)]
            ax = _layer_norm([_dot(wx, j, xt) for j in range(4 * H)], cell.ln_x.weight, cell.ln_x.bias, eps)
            ah = _layer_norm([_dot(wh, j, h) for j in range(4 * H)], cell.ln_h.weight, cell.ln_h.bias, eps)
            a = [ax[j] + ah[j] + b[j] for j in range(4 * H)]
            c = [_sigmoid(a[H + j]) * c[j] + _sigmoid(a[j]) * torch.tanh(a[2 * H + j]) for j in range(H)]
            cn = _layer_norm(c, cell.ln_c.weight, cell.ln_c.bias, eps)
            h = [_sigmoid(a[3 * H + j]) * torch.tanh(cn[j]) for j in range(H)]
            steps.append(torch.stack(h))
        rows.append(torch.stack(steps))
    return torch.stack(rows)  # (B, T, H)


def _batch_norm_step(
    a: list[list[Scalar]], bn: StepBatchNorm, t: int, training: bool
) -> tuple[list[list[Scalar]], list[float], list[float]]:
    """Normalize a[b][j] over the batch b, per channel j, with the statistics of step t.
    Returns the output and the (mean, unbiased var) of the batch, for checking the running averages."""
    B, C = len(a), len(a[0])
    out: list[list[Scalar]] = [[torch.zeros(())] * C for _ in range(B)]
    means, uvars = [], []
    s = min(t, bn.max_steps - 1)
    for j in range(C):
        if training:
            mu = sum((a[b][j] for b in range(B)), torch.zeros((), dtype=torch.float64)) / B
            var = sum(((a[b][j] - mu) ** 2 for b in range(B)), torch.zeros((), dtype=torch.float64)) / B
            means.append(float(mu.detach()))
            uvars.append(float(var.detach()) * B / (B - 1))
        else:
            mu, var = bn.running_mean[s, j], bn.running_var[s, j]
        for b in range(B):
            z = (a[b][j] - mu) / torch.sqrt(var + bn.eps)
            if bn.weight is not None:
                z = z * bn.weight[j]
            if bn.bias is not None:
                z = z + bn.bias[j]
            out[b][j] = z
    return out, means, uvars


def bn_lstm_reference(
    cell: BatchNormLSTM, x: torch.Tensor, training: bool
) -> tuple[torch.Tensor, list[tuple[list[float], list[float]]]]:
    """Cooijmans et al. (2016) eq. 6-8, one scalar at a time, statistics per time step over the batch.
    Returns the outputs and, per step, the batch statistics of BN_x (for the running averages)."""
    B, T, In = x.shape
    H = cell.hidden_size
    wx, wh, bias = cell.w_x.weight, cell.w_h.weight, cell.bias
    h = [[torch.zeros((), dtype=torch.float64) for _ in range(H)] for _ in range(B)]
    c = [[torch.zeros((), dtype=torch.float64) for _ in range(H)] for _ in range(B)]
    out_steps, x_stats = [], []
    for t in range(T):
        ax = [[_dot(wx, j, [x[b, t, k] for k in range(In)]) for j in range(4 * H)] for b in range(B)]
        ah = [[_dot(wh, j, h[b]) for j in range(4 * H)] for b in range(B)]
        nx, mx, vx = _batch_norm_step(ax, cell.bn_x, t, training)
        nh, _, _ = _batch_norm_step(ah, cell.bn_h, t, training)
        x_stats.append((mx, vx))
        a = [[nx[b][j] + nh[b][j] + bias[j] for j in range(4 * H)] for b in range(B)]
        c = [
            [_sigmoid(a[b][H + j]) * c[b][j] + _sigmoid(a[b][j]) * torch.tanh(a[b][2 * H + j]) for j in range(H)]
            for b in range(B)
        ]
        cn, _, _ = _batch_norm_step(c, cell.bn_c, t, training)
        h = [[_sigmoid(a[b][3 * H + j]) * torch.tanh(cn[b][j]) for j in range(H)] for b in range(B)]
        out_steps.append(torch.stack([torch.stack(hb) for hb in h]))  # (B, H)
    return torch.stack(out_steps, dim=1), x_stats  # (B, T, H)


def _randomize(cell: nn.Module) -> None:
    """Move every parameter away from its init (gains 1, biases 0) so the references check all terms."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _grads(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = fn()
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)  # a generic direction
    return list(torch.autograd.grad((out * weights).sum(), inputs))


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_lstm_matches_reference_and_gradcheck(affine: bool) -> None:
    torch.manual_seed(0)
    cell = LayerNormLSTM(input_size=2, hidden_size=2, eps=1e-5, affine=affine).double()
    _randomize(cell)
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)  # (B, T, In)
    torch.testing.assert_close(cell(x), ln_lstm_reference(cell, x), rtol=1e-10, atol=1e-12)

    params = list(cell.parameters())
    ours = _grads(lambda: cell(x), [x, *params])
    ref = _grads(lambda: ln_lstm_reference(cell, x), [x, *params])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)

    names = [n for n, _ in cell.named_parameters()]

    def as_function(x_: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(cell, dict(zip(names, ps, strict=True)), (x_,))

    assert torch.autograd.gradcheck(as_function, (x, *[p.detach().requires_grad_() for p in params]))


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_lstm_matches_reference_and_gradcheck(affine: bool) -> None:
    torch.manual_seed(0)
    cell = BatchNormLSTM(input_size=2, hidden_size=2, max_steps=3, eps=1e-5, momentum=0.1, affine=affine).double()
    _randomize(cell)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)  # (B, T, In)

    # training mode: per-step batch statistics, and the running averages of each step updated separately
    cell.train()
    ours = cell(x)
    ref, x_stats = bn_lstm_reference(cell, x, training=True)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for t, (mean, uvar) in enumerate(x_stats):
        expected_mean = 0.1 * torch.tensor(mean, dtype=torch.float64)  # from 0 with momentum 0.1
        expected_var = 0.9 + 0.1 * torch.tensor(uvar, dtype=torch.float64)  # from 1, unbiased variance
        torch.testing.assert_close(cell.bn_x.running_mean[t], expected_mean)
        torch.testing.assert_close(cell.bn_x.running_var[t], expected_var)
    assert not torch.allclose(cell.bn_x.running_mean[1], cell.bn_x.running_mean[2])  # separate per step

    params = list(cell.parameters())
    g_ours = _grads(lambda: cell(x), [x, *params])
    g_ref = _grads(lambda: bn_lstm_reference(cell, x, training=True)[0], [x, *params])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)

    names = [n for n, _ in cell.named_parameters()]

    def as_function(x_: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(cell, dict(zip(names, ps, strict=True)), (x_,))

    assert torch.autograd.gradcheck(as_function, (x, *[p.detach().requires_grad_() for p in params]))

    # eval mode: running statistics of each step; a longer sequence reuses the last step's statistics
    cell.eval()
    x_long = torch.randn(2, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(cell(x_long), bn_lstm_reference(cell, x_long, training=False)[0], rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x_: cell(x_), (x_long.clone().requires_grad_(),))


def test_step_batch_norm_beyond_trained_length_does_not_record_stats() -> None:
    bn = StepBatchNorm(3, max_steps=2)
    before = bn.running_mean.clone()
    bn.train()
    out = bn(torch.randn(8, 3) + 5.0, t=4)  # training past the trained length: batch stats, no record
    assert torch.equal(bn.running_mean, before)
    assert math.isclose(float(out.detach().mean()), 0.0, abs_tol=1e-5)
