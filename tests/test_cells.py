"""The fast recurrent-normalized cells (hand-written backward, cells.py) against the old autograd loop
(tests/cell_reference.py): outputs, the gradient of the input and of every parameter, and the running
statistics of every StepBatchNorm, in every mode (training, eval with running or batch statistics,
recalibration, sequences longer than the trained length). The float64 per-element references of
tests/test_models.py check both against the papers' equations."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from cell_reference import old_bn_lstm, old_ln_lstm
from torch import nn

from cryptonorm.config import ModelConfig
from cryptonorm.learn.models import BatchNormLSTM, LayerNormLSTM, build_model
from cryptonorm.learn.norms import StepBatchNorm, recalibrate

torch.set_num_threads(1)
Cell = LayerNormLSTM | BatchNormLSTM
Forward = Callable[[torch.Tensor], torch.Tensor]


def _randomize(cell: nn.Module, seed: int = 1) -> None:
    """Move parameters and running statistics away from their init so every term is checked."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in cell.modules():
            if isinstance(m, StepBatchNorm):
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def _outputs_and_grads(cell: Cell, forward: Forward, x: torch.Tensor) -> list[torch.Tensor]:
    """[output, d/dx, d/dparam for every parameter] of a generic weighted sum of the outputs."""
    x = x.detach().clone().requires_grad_()
    out = forward(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), [x, *cell.parameters()])
    return [out.detach(), *grads]


def _buffers(cell: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in cell.buffers()]


def _check_against_old(cell: Cell, x: torch.Tensor, rtol: float, atol: float) -> None:
    """The cell (fast path) and its forward_loop give the old loop's outputs, gradients and buffers."""
    old = old_ln_lstm if isinstance(cell, LayerNormLSTM) else old_bn_lstm
    twins = [copy.deepcopy(cell) for _ in range(3)]  # each path updates its own running statistics
    ref = _outputs_and_grads(twins[0], lambda x_: old(twins[0], x_), x)  # type: ignore[arg-type,misc]
    for twin, forward in ((twins[1], twins[1]), (twins[2], twins[2].forward_loop)):
        got = _outputs_and_grads(twin, forward, x)
        assert len(got) == len(ref)
        for name, a, b in zip(["output", "x", *(n for n, _ in cell.named_parameters())], got, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
        for a, b in zip(_buffers(twin), _buffers(twins[0]), strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_cell_equals_the_old_loop_float64(affine: bool) -> None:
    torch.manual_seed(0)
    cell = LayerNormLSTM(input_size=3, hidden_size=5, affine=affine).double()
    _randomize(cell)
    _check_against_old(cell, torch.randn(6, 7, 3, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval", "eval_batch_stats"])
@pytest.mark.parametrize("steps", [7, 4, 9])  # the window, a longer sequence, a shorter one
def test_batch_norm_cell_equals_the_old_loop_float64(affine: bool, mode: str, steps: int) -> None:
    torch.manual_seed(0)
    cell = BatchNormLSTM(3, 5, max_steps=7, affine=affine,
                         eval_stats="batch" if mode == "eval_batch_stats" else "running").double()
    _randomize(cell)
    cell.train(mode == "train")
    _check_against_old(cell, torch.randn(6, steps, 3, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_cells_at_benchmark_size_are_as_accurate_in_float32_as_the_old_loop(norm: str) -> None:
    """batch 64, window 32, 16 features, hidden 64, float32: the error of every output and gradient
    against the old loop in float64 is within 3x the old loop's own float32 error (summation orders differ)."""
    torch.manual_seed(0)
    cell: Cell = LayerNormLSTM(16, 64) if norm == "layer" else BatchNormLSTM(16, 64, 32)
    old = old_ln_lstm if norm == "layer" else old_bn_lstm
    x = torch.randn(64, 32, 16)
    c64, c_old, c_new = copy.deepcopy(cell).double(), copy.deepcopy(cell), copy.deepcopy(cell)
    truth = _outputs_and_grads(c64, lambda x_: old(c64, x_), x.double())  # type: ignore[arg-type]
    ref = _outputs_and_grads(c_old, lambda x_: old(c_old, x_), x)  # type: ignore[arg-type]
    got = _outputs_and_grads(c_new, c_new, x)
    for t, r, g in zip(truth, ref, got, strict=True):
        err_old, err_new = (r.double() - t).abs().max(), (g.double() - t).abs().max()
        assert err_new <= 3 * err_old + 1e-6 * t.abs().max(), (float(err_new), float(err_old))
    for a, b in zip(_buffers(c_new), _buffers(c64), strict=True):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_inference_without_gradient_equals_the_fast_path(norm: str) -> None:
    torch.manual_seed(0)
    cell: Cell = LayerNormLSTM(3, 4).double() if norm == "layer" else BatchNormLSTM(3, 4, 5).double()
    _randomize(cell)
    cell.eval()
    x = torch.randn(8, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        plain = cell(x)  # no gradient: the plain loop
    torch.testing.assert_close(cell(x.requires_grad_()).detach(), plain, rtol=1e-10, atol=1e-12)


def test_batch_norm_cell_trains_on_one_sample_as_step_batch_norm_does() -> None:
    torch.manual_seed(0)
    cell = BatchNormLSTM(3, 4, 5).double()
    _check_against_old(cell, torch.randn(1, 5, 3, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_recalibration_sets_the_same_statistics_as_the_old_loop() -> None:
    torch.manual_seed(0)
    m = ModelConfig.model_validate({"kind": "lstm", "norm": "batch", "norm_placement": "cell", "hidden": [6, 4]})
    model = build_model(m, 3, 5).double()
    _randomize(model)
    old = copy.deepcopy(model)
    for mod in old.modules():
        if isinstance(mod, BatchNormLSTM):
            setattr(mod, "forward", lambda x_, mod=mod: old_bn_lstm(mod, x_))  # noqa: B010
    windows = torch.randn(40, 5, 3, dtype=torch.float64)
    assert recalibrate(model, windows) == recalibrate(old, windows) == 6
    for a, b in zip(_buffers(model), _buffers(old), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    model.eval()
    old.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(windows), old(windows), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cells_trace_through_their_plain_loop() -> None:
    """ONNX export traces the cells: under tracing they run forward_loop, whose graph replays correctly."""
    torch.manual_seed(0)
    cell = LayerNormLSTM(3, 4).eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        traced = torch.jit.trace(cell, (x,), check_trace=False)
        x2 = torch.randn(3, 5, 3)
        torch.testing.assert_close(traced(x2), cell(x2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_cells_train_under_bf16_autocast(norm: str) -> None:
    """train.bf16: the projections run in bf16, the recurrence in float32; gradients close to float32's."""
    torch.manual_seed(0)
    cell: Cell = LayerNormLSTM(4, 8) if norm == "layer" else BatchNormLSTM(4, 8, 6)
    x = torch.randn(16, 6, 4)
    twin = copy.deepcopy(cell)
    old = old_ln_lstm if norm == "layer" else old_bn_lstm
    ref = _outputs_and_grads(twin, lambda x_: old(twin, x_), x)  # type: ignore[arg-type]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _outputs_and_grads(cell, cell, x)
    assert all(g.dtype == torch.float32 for g in got)
    for g, r in zip(got, ref, strict=True):
        assert (g - r).abs().max() <= 0.05 * r.abs().max() + 1e-3  # bf16 has 8 bits of mantissa
