"""Recurrent-normalized LSTM cells (`model.norm_placement: cell`) with a hand-written backward pass.

  LayerNormLSTM  the layer-normalized LSTM of Ba, Kiros & Hinton (2016), "Layer Normalization"
  BatchNormLSTM  the recurrent batch-normalized LSTM of Cooijmans et al. (2016), "Recurrent Batch Normalization"

The recurrence is sequential, so it stays a loop over time steps, but autograd over the old loop was
slow: ~40 small autograd nodes per step, and each `gx[:, t]` cost a (B, T, 4H) zero-fill in the backward
(O(T^2)). Here the parts that do not depend on h_{t-1} run for all steps at once (the input projection
W_x x_t and its norm: LN_x per sample and step, BN_x with per-step statistics over the batch), and the
loop itself is one torch.autograd.Function per layer: the forward runs each step with fused kernels (mm,
native layer/batch norm, one sigmoid over the 4H gates) and keeps what the backward needs, the backward
walks the steps in reverse with ~20 kernels per step (native norm backwards, dh by one addmm), and the
weight, gain and bias gradients are summed over the steps once. The float64 per-element references in
tests/test_models.py and the old autograd loop (tests/cell_reference.py, tests/test_cells.py) check
outputs, gradients and running statistics.

The Function is for training. Without a gradient (inference, recalibration), under tracing (ONNX export)
and under torch.compile the cells run `forward_loop`, the same recurrence as plain autograd ops (one
`unbind` instead of T selects), which those tools follow themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from cryptonorm.learn.norms import StepBatchNorm

Tensor = torch.Tensor
Steps = list[torch.Tensor]  # one (B, .) tensor per time step


@dataclass
class NormSpec:
    """What one norm inside the recurrence does; the gain and bias travel separately (autograd inputs).

    kind: "layer" (over the features of each sample) or "batch" (over the batch, statistics per step).
    mode (batch only): "train" (batch statistics, recorded into the running buffers at steps < max_steps),
    "batch" (batch statistics, not recorded), "running" (the recorded statistics of step min(t, max - 1)).
    """

    kind: str
    eps: float
    mode: str = "train"
    momentum: float = 0.1
    running_mean: Tensor | None = None  # (T_max, C)
    running_var: Tensor | None = None  # (T_max, C), unbiased as BatchNorm stores it


def batch_spec(bn: StepBatchNorm) -> NormSpec:
    """The NormSpec of a StepBatchNorm in its current mode (training, or eval with its model.batch_norm.eval choice;
    recalibration runs the plain loop, see `use_fast_path`)."""
    mode = "train" if bn.training else "batch" if bn.eval_stats == "batch" else "running"
    return NormSpec("batch", bn.eps, mode, bn.momentum, bn.running_mean, bn.running_var)


class _StepNorm:
    """One norm applied step by step inside the recurrence: keeps each step's input and statistics for the
    backward, which returns the input gradient and sums the gain and bias gradients over the steps."""

    def __init__(self, spec: NormSpec, weight: Tensor | None, bias: Tensor | None) -> None:
        self.spec, self.weight, self.bias = spec, weight, bias
        self.saved: list[tuple[Tensor, Tensor, Tensor]] = []  # per step: input, mean, 1/std
        self.dws: Steps = []  # per step: gain and bias gradients, summed by `param_grads`
        self.dbs: Steps = []

    def forward(self, a: Tensor, t: int) -> Tensor:  # (B, C) at step t -> (B, C)
        if self.spec.kind == "layer":
            y, mean, rstd = torch.native_layer_norm(a, (a.shape[1],), self.weight, self.bias, self.spec.eps)
        else:
            y, mean, rstd = self._batch(a, t)
        self.saved.append((a, mean, rstd))  # LN: mean, rstd (B, 1); BN: (C,)
        return y

    def _batch(self, a: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        sp = self.spec
        assert sp.running_mean is not None and sp.running_var is not None
        steps = sp.running_mean.shape[0]
        rm, rv = sp.running_mean[min(t, steps - 1)], sp.running_var[min(t, steps - 1)]  # (C,) views
        if sp.mode in ("train", "batch"):
            record = sp.mode == "train" and t < steps  # steps past the trained length are not recorded
            # updates rm, rv in place (unbiased variance: the caller sends batches of 2 or more)
            return torch.native_batch_norm(a, self.weight, self.bias, rm if record else None,
                                           rv if record else None, True, sp.momentum, sp.eps)
        y = torch.native_batch_norm(a, self.weight, self.bias, rm, rv, False, sp.momentum, sp.eps)[0]
        return y, rm.clone(), torch.rsqrt(rv + sp.eps)

    def backward(self, dy: Tensor, t: int) -> Tensor:
        """d loss / d input at step t; the step's gain and bias gradients are kept for `param_grads`."""
        a, mean, rstd = self.saved[t]
        sp, w, b = self.spec, self.weight, self.bias
        # the bias gradient is a plain column sum of dy: the CPU native backward kernels sum it over the batch
        # with ~3x the rounding error of torch.sum (issue 23: BN_c's bias gradient, tests/test_cells.py)
        mask = [True, w is not None, False]
        if sp.kind == "layer":
            dx, dw, _ = torch.ops.aten.native_layer_norm_backward(dy, a, (a.shape[1],), mean, rstd, w, b, mask)
        elif sp.mode in ("train", "batch"):  # batch statistics: the gradient flows through them too
            dx, dw, _ = torch.ops.aten.native_batch_norm_backward(dy, a, w, None, None, mean, rstd, True, sp.eps,
                                                                  mask)
        else:  # running statistics: constants
            dx = dy * (rstd if w is None else rstd * w)
            dw = (dy * (a - mean) * rstd).sum(0) if w is not None else None
        db = dy.sum(0) if b is not None else None
        # CUDA's native backward kernels may return a gradient that output_mask did not ask for (seen on an
        # H100 for a BatchNorm without bias): only a gain or bias that exists gets one
        if w is not None and dw is not None:
            self.dws.append(dw)
        if b is not None and db is not None:
            self.dbs.append(db)
        return dx  # type: ignore[no-any-return]

    def param_grads(self) -> tuple[Tensor | None, Tensor | None]:
        """The gain and bias gradients summed over the steps (one kernel each, not one add per step)."""
        dw = torch.stack(self.dws).sum(0) if self.dws else None
        db = torch.stack(self.dbs).sum(0) if self.dbs else None
        self.dws, self.dbs = [], []  # a second backward (retain_graph) starts anew
        return dw, db


def _recurrence(gx: Tensor, w_h: Tensor, nh: _StepNorm, nc: _StepNorm) -> tuple[Tensor, Steps, Steps, Steps, Steps]:
    """The LSTM recurrence on time-major input pre-activations gx (T, B, 4H), gates i, f, g, o:

        gates_t = N_h(W_h h_{t-1}; t) + gx_t;  c_t = sig(f) c_{t-1} + sig(i) tanh(g);  h_t = sig(o) tanh(N_c(c_t; t))

    Returns out (T, B, H) and, per step, what the backward needs: the sigmoid of the gates (B, 4H), tanh(g),
    c_t and tanh(N_c(c_t)) (B, H). Per-step tensors, not (T, ...) buffers: the allocator reuses the memory
    freed by the previous training step, where a fresh large buffer costs page faults each time.
    """
    T, B, G = gx.shape
    H = G // 4
    out = gx.new_empty(T, B, H)
    wt = w_h.t()  # (H, 4H)
    acts: Steps = []
    gs: Steps = []
    cs: Steps = []
    tcs: Steps = []
    for t in range(T):
        a = gx.new_zeros(B, G) if t == 0 else torch.mm(out[t - 1], wt)  # W_h h_{t-1}; h_{-1} = 0
        y = nh.forward(a, t)
        y += gx[t]
        act = torch.sigmoid(y)  # all 4H in one kernel; the g quarter is unused (its tanh is in g)
        g = torch.tanh(y[:, 2 * H : 3 * H])
        i, f, _, o = act.chunk(4, dim=1)  # (B, H) views
        if t == 0:
            c = i * g  # c_{-1} = 0
        else:
            c = f * cs[-1]
            c.addcmul_(i, g)
        tc = nc.forward(c, t).tanh_()
        torch.mul(o, tc, out=out[t])
        acts.append(act)
        gs.append(g)
        cs.append(c)
        tcs.append(tc)
    return out, acts, gs, cs, tcs


def _recurrence_backward(grad_out: Tensor, w_h: Tensor, norm_h: _StepNorm, norm_c: _StepNorm, out: Tensor,
                         acts: Steps, gs: Steps, cs: Steps, tcs: Steps) -> tuple[Tensor, Tensor]:
    """Gradients of _recurrence: (d gx (T, B, 4H), d W_h (4H, H)); the norms collect their own.

    Per step: dh = dout_t + dh_rec;  do = dh tanh(N_c(c));  dN_c = dh o (1 - tanh^2);  dc = N_c'(dN_c) + dc_rec;
    di = dc g;  df = dc c_{t-1};  dg = dc i;  dc_rec = dc f;  d gates = those x the activations' derivatives;
    dh_rec = N_h'(d gates) W_h, and d W_h += N_h'(d gates)^T h_{t-1}.
    """
    T, B, H = grad_out.shape
    dgx = grad_out.new_empty(T, B, 4 * H)
    dw = w_h.new_zeros(4 * H, H)
    one = grad_out.new_ones(())
    dh = grad_out[T - 1]
    dc_rec: Tensor | None = None
    for t in reversed(range(T)):
        act, g, tc = acts[t], gs[t], tcs[t]
        i, f, _, o = act.chunk(4, dim=1)
        dgates = dgx[t]
        di, df, dg, do = dgates.chunk(4, dim=1)
        torch.mul(dh, tc, out=do)
        dcn = dh * o
        dcn.addcmul_(dcn * tc, tc, value=-1.0)  # x (1 - tanh^2)
        dc = norm_c.backward(dcn, t)
        if dc_rec is not None:
            dc += dc_rec
        torch.mul(dc, g, out=di)
        if t > 0:
            torch.mul(dc, cs[t - 1], out=df)
        else:
            df.zero_()
        torch.mul(dc, i, out=dg)
        dc_rec = dc * f
        deriv = torch.addcmul(act, act, act, value=-1.0)  # sigmoid' = s (1 - s)
        torch.addcmul(one, g, g, value=-1.0, out=deriv[:, 2 * H : 3 * H])  # tanh' = 1 - tanh^2
        dgates.mul_(deriv)
        da = norm_h.backward(dgates, t)  # (B, 4H); at t = 0 only for the norm's gain and bias
        if t > 0:  # h_{-1} = 0 is a constant: nothing flows further back from step 0
            dw.addmm_(da.t(), out[t - 1])
            dh = torch.addmm(grad_out[t - 1], da, w_h)  # dout_{t-1} + dh_rec, (B, H)
    return dgx, dw


class _NormLSTMFunction(torch.autograd.Function):
    """(gx (T, B, 4H), W_h, N_h gain/bias, N_c gain/bias) -> h (T, B, H), with the hand-written backward."""

    @staticmethod
    def forward(ctx: Any, gx: Tensor, w_h: Tensor, wh: Tensor | None, bh: Tensor | None, wc: Tensor | None,
                bc: Tensor | None, spec_h: NormSpec, spec_c: NormSpec) -> Tensor:
        norm_h, norm_c = _StepNorm(spec_h, wh, bh), _StepNorm(spec_c, wc, bc)
        out, *per_step = _recurrence(gx, w_h, norm_h, norm_c)
        ctx.save_for_backward(w_h, out)
        ctx.per_step, ctx.norms = per_step, (norm_h, norm_c)  # per-step intermediates (lists of tensors)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        w_h, out = ctx.saved_tensors
        norm_h, norm_c = ctx.norms
        with torch.autocast(grad_out.device.type, enabled=False):
            dgx, dw = _recurrence_backward(grad_out, w_h, norm_h, norm_c, out, *ctx.per_step)
        return dgx, dw, *norm_h.param_grads(), *norm_c.param_grads(), None, None


def run_cell(gx: Tensor, w_h: Tensor, spec_h: NormSpec, norm_h: tuple[Tensor | None, Tensor | None],
             spec_c: NormSpec, norm_c: tuple[Tensor | None, Tensor | None]) -> Tensor:
    """The recurrence with the hand-written backward: gx (T, B, 4H) -> h (T, B, H)."""
    with torch.autocast(gx.device.type, enabled=False):
        gx = gx.to(w_h.dtype)  # fp32 under bf16 autocast, as the norms' statistics are
        out: Tensor = _NormLSTMFunction.apply(gx, w_h, *norm_h, *norm_c, spec_h, spec_c)
        return out


def use_fast_path(cell: nn.Module, x: Tensor) -> bool:
    """The hand-written backward is for training: a gradient wanted, not tracing (ONNX export) nor compiling
    (torch.compile, torch.export), which follow the plain loop themselves. Without a gradient (inference,
    recalibration) the plain loop is as fast and calls the norm modules, so their hooks see every step."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in cell.parameters())


def step_batch_norm_all(bn: StepBatchNorm, x: Tensor) -> Tensor:
    """StepBatchNorm of every step at once: x (B, T, C), step t normalized over the batch with its own
    statistics, exactly as `bn(x[:, t], t)` for each t in turn (running averages included; a training
    batch needs 2 or more samples). One batch norm of (B, T * C): its channels are the (step, channel) pairs."""
    B, T, C = x.shape
    steps = bn.max_steps
    x = x.to(bn.running_mean.dtype)
    sp = batch_spec(bn)
    if T <= steps:  # views: batch_norm updates the buffers in place
        rm, rv = bn.running_mean[:T].view(-1), bn.running_var[:T].view(-1)
    else:  # past the trained length: the statistics of the last step (copies; recorded rows copied back)
        idx = torch.arange(T, device=x.device).clamp_(max=steps - 1)
        rm, rv = bn.running_mean[idx].view(-1), bn.running_var[idx].view(-1)
    use_batch = sp.mode in ("train", "batch")
    record = sp.mode == "train"
    weight = None if bn.weight is None else bn.weight.repeat(T)  # (T * C,)
    bias = None if bn.bias is None else bn.bias.repeat(T)
    out = torch.batch_norm(x.reshape(B, T * C), weight, bias, rm if record or not use_batch else None,
                           rv if record or not use_batch else None, use_batch, bn.momentum, bn.eps, False)
    if record and T > steps:
        with torch.no_grad():
            bn.running_mean.copy_(rm.view(T, C)[:steps])
            bn.running_var.copy_(rv.view(T, C)[:steps])
    return out.view(B, T, C)
