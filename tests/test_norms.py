"""The norms for non-stationary markets (RevIN, DAIN, batch renormalization, BatchNorm at inference):
each checked against an independent slow float64 reference or against torch's own BatchNorm, with
gradient checks, plus the properties the papers promise (RevIN round trip and invariance, exact
recalibrated statistics, eval-mode batch independence except for `bn_eval: batch`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call

from cryptonorm.config import ModelConfig
from cryptonorm.learn.input_norms import DAIN, RevIN, revin_target_feature
from cryptonorm.learn.models import Forecaster, build_model
from cryptonorm.learn.norms import (
    BatchNorm,
    BatchRenorm,
    StepBatchNorm,
    eval_uses_batch_statistics,
    recalibrate,
    uses_batch_statistics,
)

torch.set_num_threads(1)
Scalar = torch.Tensor  # 0-dim float64: the references stay differentiable
ZERO = torch.zeros((), dtype=torch.float64)


def make_cfg(kind: str, norm: str, placement: str = "layer", **kw: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"kind": kind, "norm": norm, "norm_placement": placement, "hidden": [8, 4], "groups": 2, **kw}
    )


def _randomize(mod: nn.Module, scale: float = 0.3) -> None:
    """Move every parameter away from its init so the references check every term."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _grads(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = fn()
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)  # a generic direction
    return list(torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True))


class _Call(nn.Module):
    """Runs fn(x); holds mod so functional_call can swap mod's parameters for gradcheck's inputs."""

    def __init__(self, mod: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.mod = mod
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _gradcheck_module(mod: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    """torch.autograd.gradcheck of fn(x) with respect to x and every parameter of mod (float64)."""
    call = _Call(mod, fn)
    names = [n for n, _ in call.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in call.named_parameters()]

    def as_function(x_: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(call, dict(zip(names, ps, strict=True)), (x_,))

    assert torch.autograd.gradcheck(as_function, (x.detach().clone().requires_grad_(), *params))


# ---------------------------------------------------------------- RevIN


def revin_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """Kim et al. (2022) eq. 1-2, one scalar at a time: per sample and feature, the window's mean and
    (biased) variance, then the learnable affine."""
    B, W, F = x.shape
    rows = []
    for b in range(B):
        cols = []
        for f in range(F):
            vals = [x[b, t, f] for t in range(W)]
            mu = sum(vals, ZERO) / W
            var = sum(((v - mu) ** 2 for v in vals), ZERO) / W
            z = [(v - mu) / torch.sqrt(var + eps) for v in vals]
            if weight is not None and bias is not None:
                z = [v * weight[f] + bias[f] for v in z]
            cols.append(torch.stack(z))
        rows.append(torch.stack(cols, dim=1))
    return torch.stack(rows)


@pytest.mark.parametrize("affine", [True, False])
def test_revin_matches_reference_round_trips_and_gradchecks(affine: bool) -> None:
    torch.manual_seed(0)
    rev = RevIN(3, eps=1e-5, affine=affine).double()
    _randomize(rev)
    x = (torch.randn(2, 5, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.01]) + 4.0).requires_grad_()
    z, stats = rev.normalize(x)
    torch.testing.assert_close(z, revin_reference(x, rev.weight, rev.bias, rev.eps), rtol=1e-10, atol=1e-12)
    # round trip: de-normalizing the normalized window gives the input back (to RevIN's eps^2 gain guard)
    torch.testing.assert_close(rev.invert(z, stats), x, rtol=1e-8, atol=1e-10)
    params = list(rev.parameters())
    ours = _grads(lambda: rev.normalize(x)[0], [x, *params])
    ref = _grads(lambda: revin_reference(x, rev.weight, rev.bias, rev.eps), [x, *params])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    _gradcheck_module(rev, lambda x_: rev.normalize(x_)[0], x)
    # de-normalizing a forecast as a value of column 1 = inverting it as the window's last row would be
    rev.set_target(1, scale=2.0, shift=0.5)
    out = torch.randn(2, dtype=torch.float64)
    z_last = z.detach().clone()
    z_last[:, -1, 1] = out
    expected = rev.invert(z_last, stats)[:, -1, 1] * 2.0 + 0.5
    torch.testing.assert_close(rev.denormalize(out, stats), expected, rtol=1e-10, atol=1e-12)


def _revin_model(kind: str, denorm_target: int | None) -> Forecaster:
    torch.manual_seed(0)
    # eps 1e-14: exact invariance holds for std = sqrt(var + eps) only as eps -> 0
    model = build_model(make_cfg(kind, "layer", input_norm="revin", norm_eps=1e-14), n_features=3, window=6).double()
    _randomize(model, 0.1)
    model.y_mean.fill_(0.002)
    model.y_std.fill_(0.03)
    assert isinstance(model.input_norm, RevIN)
    model.input_norm.set_target(denorm_target, scale=0.02, shift=0.001)
    return model.eval()


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_revin_forecast_is_invariant_to_an_affine_change_of_one_window(kind: str) -> None:
    model = _revin_model(kind, denorm_target=None)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    before = model(x)
    moved = x.clone()
    a, b = torch.tensor([3.0, 0.2, 7.0], dtype=torch.float64), torch.tensor([-5.0, 2.0, 0.3], dtype=torch.float64)
    moved[2] = moved[2] * a + b  # one window, each feature its own positive scale and shift
    after = model(moved)
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(model(x * 0 + torch.randn_like(x)), before)  # the model is not constant


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_revin_forecast_moves_with_its_target_feature(kind: str) -> None:
    """With de-normalization the forecast is in the target column's units: an affine change a*x+b of that
    column in one window maps the raw forecast r = x_hat * scale + shift to (a*x_hat + b) * scale + shift."""
    model = _revin_model(kind, denorm_target=1)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    raw = model.to_forecast(model(x))  # (4,) raw target units
    x_hat = (raw - 0.001) / 0.02  # the forecast in the column's (scaled) units
    moved = x.clone()
    moved[2, :, 1] = moved[2, :, 1] * 4.0 - 1.5
    moved[2, :, 0] = moved[2, :, 0] * 0.5 + 3.0  # other columns: no effect
    raw_after = model.to_forecast(model(moved))
    expected = raw.clone()
    expected[2] = (4.0 * x_hat[2] - 1.5) * 0.02 + 0.001
    torch.testing.assert_close(raw_after, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm", ["layer", "weight"])
def test_mlp_folding_revins_affine_into_its_first_layer_is_the_same_model(norm: str) -> None:
    """The MLP applies RevIN's gamma/beta through its first Linear (a speed-up); the unfolded model (RevIN
    with its affine, then the plain layers on the flattened window) must give the same forecasts and the
    same gradients for every parameter and the input."""
    torch.manual_seed(0)
    model = build_model(make_cfg("mlp", norm, input_norm="revin", dropout=0.0), n_features=3, window=6).double()
    _randomize(model, 0.3)
    assert isinstance(model.input_norm, RevIN) and model.folds_input_affine
    model.input_norm.set_target(1, scale=0.02, shift=0.001)
    x = (torch.randn(5, 6, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    rev = model.input_norm

    def unfolded() -> torch.Tensor:
        z, stats = rev.normalize(x)  # with gamma/beta
        out = model.head(model.body(z.flatten(1))).squeeze(-1)
        return (rev.denormalize(out, stats) - model.y_mean) / model.y_std

    torch.testing.assert_close(model(x), unfolded(), rtol=1e-12, atol=1e-12)
    params = [x, *model.parameters()]
    for ours, ref in zip(_grads(lambda: model(x), params), _grads(unfolded, params), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_revin_target_feature_is_the_column_in_the_targets_units() -> None:
    names = ["rsi_14", "logret_1", "logret_4", "vol_24", "vol_6", "volz_24"]
    assert revin_target_feature(names, "return", 1) == "logret_1"
    assert revin_target_feature(names, "return", 4) == "logret_4"
    assert revin_target_feature(names, "return", 2) is None  # a 2-bar return is not in logret_1's units
    assert revin_target_feature(names, "volatility", 4) == "vol_6"
    assert revin_target_feature(names, "volatility", 20) == "vol_24"
    assert revin_target_feature(names, "volatility", 4, vol_form="var") is None  # a variance: other units
    assert revin_target_feature(names, "volatility", 4, vol_form="log_var") is None
    assert revin_target_feature(names, "direction", 1) is None
    assert revin_target_feature(["rsi_14"], "volatility", 1) is None


def test_revin_target_survives_a_state_dict_round_trip() -> None:
    model = build_model(make_cfg("mlp", "layer", input_norm="revin"), 3, 6)
    assert isinstance(model.input_norm, RevIN)
    model.input_norm.set_target(2, 0.5, 0.1)
    again = build_model(make_cfg("mlp", "layer", input_norm="revin"), 3, 6)
    again.load_state_dict(model.state_dict())
    assert isinstance(again.input_norm, RevIN) and again.input_norm.target == 2
    x = torch.randn(3, 6, 3)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))


# ---------------------------------------------------------------- DAIN


def dain_reference(x: torch.Tensor, d: DAIN) -> torch.Tensor:
    """Passalis et al. (2019) eq. 3-8 (full mode), one scalar at a time."""
    B, W, F = x.shape
    wa, wb, wc, c = d.shift.weight, d.scale.weight, d.gate.weight, d.gate.bias
    eps = 1e-8
    rows = []
    for s in range(B):
        mean = [sum((x[s, t, f] for t in range(W)), ZERO) / W for f in range(F)]
        alpha = [sum((wa[i, f] * mean[f] for f in range(F)), ZERO) for i in range(F)]
        x1 = [[x[s, t, f] - alpha[f] for f in range(F)] for t in range(W)]
        sd = [torch.sqrt(sum((x1[t][f] ** 2 for t in range(W)), ZERO) / W + eps) for f in range(F)]
        beta = [sum((wb[i, f] * sd[f] for f in range(F)), ZERO) for i in range(F)]
        beta = [b if float(b.detach()) > eps else torch.ones((), dtype=torch.float64) for b in beta]
        x2 = [[x1[t][f] / beta[f] for f in range(F)] for t in range(W)]
        m2 = [sum((x2[t][f] for t in range(W)), ZERO) / W for f in range(F)]
        gamma = [1 / (1 + torch.exp(-(sum((wc[i, f] * m2[f] for f in range(F)), ZERO) + c[i]))) for i in range(F)]
        rows.append(torch.stack([torch.stack([x2[t][f] * gamma[f] for f in range(F)]) for t in range(W)]))
    return torch.stack(rows)


def test_dain_matches_reference_and_gradchecks() -> None:
    torch.manual_seed(0)
    d = DAIN(3).double()
    _randomize(d, 0.2)
    x = (torch.randn(2, 5, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    torch.testing.assert_close(d.normalize(x)[0], dain_reference(x, d), rtol=1e-10, atol=1e-12)
    params = list(d.parameters())
    ours = _grads(lambda: d.normalize(x)[0], [x, *params])
    ref = _grads(lambda: dain_reference(x, d), [x, *params])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    _gradcheck_module(d, lambda x_: d.normalize(x_)[0], x)


def test_dain_starts_as_window_standardization_times_a_gate() -> None:
    d = DAIN(2).double()
    x = torch.randn(3, 7, 2, dtype=torch.float64) * 5 + 2
    z = d.normalize(x)[0]
    gate = torch.sigmoid(d.gate(((x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)).mean(1)))
    std = (x - x.mean(1, keepdim=True)).pow(2).mean(1, keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(z, (x - x.mean(1, keepdim=True)) / std * gate[:, None, :], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- batch renormalization


@pytest.mark.parametrize("shape", [(16, 4), (6, 4, 5)], ids=["BC", "BCT"])
def test_batch_renorm_with_r_max_1_d_max_0_is_batch_norm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    brn = BatchRenorm(4, eps=1e-5, momentum=0.1, r_max=1.0, d_max=0.0, warmup_steps=0, r_max_steps=0,
                      d_max_steps=0).double()
    bn = nn.BatchNorm1d(4, eps=1e-5, momentum=0.1).double()
    _randomize(brn)
    bn.load_state_dict({**brn.state_dict(), "num_batches_tracked": torch.tensor(0)}, strict=False)
    with torch.no_grad():
        bn.weight.copy_(brn.weight)  # type: ignore[union-attr]
        bn.bias.copy_(brn.bias)  # type: ignore[union-attr]
    for step in range(4):  # several steps: the running statistics must agree too
        x = (torch.randn(*shape, dtype=torch.float64) * (1 + step) + step).requires_grad_()
        torch.testing.assert_close(brn(x), bn(x), rtol=1e-10, atol=1e-12)
        g1 = _grads(lambda x=x: brn(x), [x, *brn.parameters()])  # type: ignore[misc]
        g2 = _grads(lambda x=x: bn(x), [x, *bn.parameters()])  # type: ignore[misc]
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(brn.running_mean, bn.running_mean)
    torch.testing.assert_close(brn.running_var, bn.running_var)
    brn.eval()
    bn.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(brn(x), bn(x), rtol=1e-10, atol=1e-12)


def batch_renorm_reference(x: torch.Tensor, m: BatchRenorm, r_max: float, d_max: float) -> torch.Tensor:
    """Ioffe (2017) Algorithm 1 for a (B, C) batch, one scalar at a time; r and d are stop_gradient."""
    B, C = x.shape
    cols = []
    for j in range(C):
        vals = [x[b, j] for b in range(B)]
        mu = sum(vals, ZERO) / B
        sigma = torch.sqrt(sum(((v - mu) ** 2 for v in vals), ZERO) / B + m.eps)
        run_sigma = torch.sqrt(m.running_var[j] + m.eps)
        r = min(max(float(sigma.detach() / run_sigma), 1 / r_max), r_max)  # floats: no gradient
        d = min(max(float((mu.detach() - m.running_mean[j]) / run_sigma), -d_max), d_max)
        assert m.weight is not None and m.bias is not None
        cols.append(torch.stack([((v - mu) / sigma * r + d) * m.weight[j] + m.bias[j] for v in vals]))
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("clipped", [False, True])
def test_batch_renorm_matches_algorithm_1(clipped: bool) -> None:
    torch.manual_seed(0)
    m = BatchRenorm(3, momentum=0.0, r_max=3.0, d_max=5.0, warmup_steps=0, r_max_steps=0, d_max_steps=0).double()
    _randomize(m)
    with torch.no_grad():  # running statistics far from the batch's (clipped) or near them (inside the bounds)
        m.running_mean.copy_(torch.tensor([80.0, -30.0, 25.0]) if clipped else torch.tensor([0.5, 0.2, -0.3]))
        m.running_var.copy_(torch.tensor([100.0, 0.0001, 0.01]) if clipped else torch.tensor([1.5, 0.8, 2.0]))
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(m(x), batch_renorm_reference(x, m, 3.0, 5.0), rtol=1e-10, atol=1e-12)
    params = list(m.parameters())
    ours = _grads(lambda: m(x), [x, *params])
    ref = _grads(lambda: batch_renorm_reference(x, m, 3.0, 5.0), [x, *params])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    if clipped:  # r and d at their bounds are constants: the function's true gradient is autograd's
        _gradcheck_module(m, m, x)


def test_batch_renorm_schedule_and_running_statistics() -> None:
    m = BatchRenorm(2, momentum=0.5, r_max=3.0, d_max=5.0, warmup_steps=10, r_max_steps=50, d_max_steps=30)
    for step, (r, d) in {0: (1.0, 0.0), 10: (1.0, 0.0), 20: (1.5, 2.5), 30: (2.0, 5.0), 50: (3.0, 5.0),
                         90: (3.0, 5.0)}.items():
        m.steps.fill_(step)
        r_max, d_max = m.limits()
        assert (float(r_max), float(d_max)) == pytest.approx((r, d))
    m.steps.fill_(0)
    x = torch.randn(8, 2) * 3 + 1
    m(x)
    assert int(m.steps) == 1
    torch.testing.assert_close(m.running_mean, 0.5 * x.mean(0))
    torch.testing.assert_close(m.running_var, 0.5 + 0.5 * x.var(0, unbiased=True))


# ---------------------------------------------------------------- bn_eval: eval-mode batch (in)dependence

# (kind, norm, placement, extra config): every new option, with MLP and LSTM
NEW = [
    ("mlp", "batchrenorm", "layer", {}),
    ("lstm", "batchrenorm", "layer", {}),
    ("mlp", "layer", "layer", {"input_norm": "revin"}),
    ("lstm", "batch", "layer", {"input_norm": "revin"}),
    ("mlp", "batch", "layer", {"input_norm": "dain"}),
    ("lstm", "layer", "layer", {"input_norm": "dain"}),
    ("mlp", "batch", "layer", {"bn_eval": "recalibrate"}),
    ("mlp", "batchrenorm", "layer", {"bn_eval": "recalibrate"}),
    ("lstm", "batch", "layer", {"bn_eval": "recalibrate"}),
    ("lstm", "batch", "cell", {"bn_eval": "recalibrate"}),
]
NEW_IDS = [f"{k}-{n}-{p}-{'-'.join(map(str, e.values())) or 'default'}" for k, n, p, e in NEW]


def _trained(kind: str, norm: str, placement: str, extra: dict[str, object]) -> Forecaster:
    torch.manual_seed(0)
    model = build_model(make_cfg(kind, norm, placement, dropout=0.3, renorm_warmup_steps=1, renorm_r_max_steps=2,
                                 renorm_d_max_steps=2, **extra), n_features=3, window=6)
    if isinstance(model.input_norm, RevIN):
        model.input_norm.set_target(0, 0.5, 0.1)
    for _ in range(4):  # a few training passes: running averages and the renorm schedule move
        model(torch.randn(16, 6, 3) * 2 + 0.5)
    if extra.get("bn_eval") == "recalibrate":
        assert recalibrate(model, torch.randn(40, 6, 3) * 3 - 1) > 0
    return model.eval()


@pytest.mark.parametrize(("kind", "norm", "placement", "extra"), NEW, ids=NEW_IDS)
def test_new_options_shapes_and_eval_mode_batch_independence(
    kind: str, norm: str, placement: str, extra: dict[str, object]
) -> None:
    model = _trained(kind, norm, placement, extra)
    assert uses_batch_statistics(model) == (norm in ("batch", "batchrenorm"))
    assert not eval_uses_batch_statistics(model)
    x = torch.randn(7, 6, 3)
    together = model(x)
    assert together.shape == (7,)
    for i in range(7):
        torch.testing.assert_close(model(x[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-6)
    other = x.clone()
    other[1:] = torch.randn(6, 6, 3) * 10
    torch.testing.assert_close(model(other)[0], together[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kind", "norm", "placement"), [
    ("mlp", "batch", "layer"), ("mlp", "batchrenorm", "layer"), ("lstm", "batch", "layer"), ("lstm", "batch", "cell"),
])
def test_bn_eval_batch_uses_the_batch_and_so_depends_on_it(kind: str, norm: str, placement: str) -> None:
    model = _trained(kind, norm, placement, {"bn_eval": "batch"})
    assert eval_uses_batch_statistics(model)
    x = torch.randn(7, 6, 3)
    other = x.clone()
    other[1:] = torch.randn(6, 6, 3) * 10
    assert not torch.allclose(model(other)[0], model(x)[0], rtol=1e-3, atol=1e-4)  # the leak, by design
    # and it is batch normalization with the batch's statistics: a shifted batch gives the same outputs
    # for the first layer's norm input (checked on the module itself)
    bn = next(m for m in model.modules() if isinstance(m, (BatchNorm, BatchRenorm, StepBatchNorm)))
    h = torch.randn(9, bn.running_mean.shape[-1])
    out = bn(h, 0) if isinstance(bn, StepBatchNorm) else bn(h)
    expected = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)
    if bn.weight is not None:
        expected = expected * bn.weight
    if bn.bias is not None:
        expected = expected + bn.bias
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- recalibration


def test_recalibrated_mlp_statistics_are_the_exact_population_statistics() -> None:
    """Independent float64 reference, layer by layer: the statistics of each BatchNorm's input over every
    window, with the earlier layers already normalized by their own recalibrated statistics."""
    torch.manual_seed(0)
    model = build_model(make_cfg("mlp", "batch", bn_eval="recalibrate", activation="tanh"), 3, 6).double()
    _randomize(model, 0.2)
    for _ in range(3):
        model(torch.randn(16, 6, 3, dtype=torch.float64))  # running averages away from anything exact
    windows = torch.randn(50, 6, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 2.0
    assert recalibrate(model, windows) == 2
    assert model.training  # recalibrate restores the mode it found
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    h = windows.flatten(1)
    for lin, bn in zip(linears[:2], bns, strict=True):
        a = (h @ lin.weight.T + lin.bias).detach().numpy()  # (N, H)
        mean, var = a.mean(axis=0), a.var(axis=0, ddof=1)
        torch.testing.assert_close(bn.running_mean, torch.as_tensor(mean), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, torch.as_tensor(var), rtol=1e-10, atol=1e-12)
        assert bn.weight is not None and bn.bias is not None
        h = torch.tanh((torch.as_tensor(a) - torch.as_tensor(mean)) / torch.sqrt(torch.as_tensor(var) + bn.eps)
                       * bn.weight + bn.bias)


@pytest.mark.parametrize(("kind", "norm", "placement"), [
    ("mlp", "batchrenorm", "layer"), ("lstm", "batch", "layer"), ("lstm", "batchrenorm", "layer"),
    ("lstm", "batch", "cell"),
])
def test_recalibrated_statistics_are_those_each_module_sees_at_inference(kind: str, norm: str, placement: str) -> None:
    """After recalibration, an ordinary eval-mode pass over the same windows feeds every BatchNorm (every
    step's statistics, for the cell) inputs whose mean and unbiased variance are the stored ones."""
    model = _trained(kind, norm, placement, {"bn_eval": "recalibrate"}).double()
    windows = torch.randn(30, 6, 3, dtype=torch.float64) * 2 - 0.5
    recalibrate(model, windows)
    seen: dict[tuple[int, int], list[torch.Tensor]] = {}

    def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        t = int(args[1]) if len(args) > 1 else 0
        seen.setdefault((id(mod), t), []).append(args[0].detach())

    mods = [m for m in model.modules() if isinstance(m, (BatchNorm, BatchRenorm, StepBatchNorm))]
    handles = [m.register_forward_pre_hook(hook) for m in mods]
    with torch.no_grad():
        model.eval()(windows)
    for h in handles:
        h.remove()
    checked = 0
    for m in mods:
        for t in range(6 if isinstance(m, StepBatchNorm) else 1):
            (x,) = seen[(id(m), t)]
            x = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 3 else x.T  # (C, values)
            rm = m.running_mean[t] if isinstance(m, StepBatchNorm) else m.running_mean
            rv = m.running_var[t] if isinstance(m, StepBatchNorm) else m.running_var
            torch.testing.assert_close(rm, x.mean(1), rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(rv, x.var(1, unbiased=True), rtol=1e-9, atol=1e-11)
            checked += 1
    assert checked == (36 if placement == "cell" else 2)


def test_recalibrate_leaves_models_without_batch_statistics_alone() -> None:
    model = build_model(make_cfg("mlp", "layer"), 3, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate(model, torch.randn(5, 6, 3)) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
