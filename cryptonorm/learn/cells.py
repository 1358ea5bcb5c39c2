"""Recurrent-normalized LSTM cells (`model.norm_placement: cell`) with a hand-written backward pass.

  LayerNormLSTM  the layer-normalized LSTM of Ba, Kiros & Hinton (2016), "Layer Normalization"
  BatchNormLSTM  the recurrent batch-normalized LSTM of Cooijmans et al. (2016), "Recurrent Batch Normalization"

The recurrence is sequential, so it stays a loop over time steps, but autograd over that loop was slow:
~40 small autograd nodes per step, and `gx[:, t]` alone cost a (B, T, 4H) zero-fill per step in the
backward (O(T^2)). Here the parts that do not depend on h_{t-1} run for all steps at once (the input
projection W_x x_t and its norm: LN_x per sample and step, BN_x with per-step statistics over the batch),
and the loop itself is one torch.autograd.Function: the forward writes every step into preallocated
time-major buffers with fused kernels (mm, native layer/batch norm, one sigmoid over the 4H gates), the
backward walks the steps in reverse with ~16 kernels per step, and the weight and gain gradients are
summed over all steps at the end. The float64 per-element references in tests/test_models.py and the
old autograd loop in tests/test_cells.py check outputs, gradients and running statistics.

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
    """The NormSpec of a StepBatchNorm in its current mode (training, or eval with its bn_eval choice;
    recalibration runs the plain loop, see `use_fast_path`)."""
    mode = "train" if bn.training else "batch" if bn.eval_stats == "batch" else "running"
    return NormSpec("batch", bn.eps, mode, bn.momentum, bn.running_mean, bn.running_var)


class _StepNorm:
    """One norm applied step by step inside the recurrence, keeping the statistics the backward needs."""

    def __init__(self, spec: NormSpec, weight: Tensor | None, bias: Tensor | None) -> None:
        self.spec, self.weight, self.bias = spec, weight, bias
        self.mean: list[Tensor] = []  # per step: LN (B, 1); BN (C,)
        self.rstd: list[Tensor] = []

    def forward(self, a: Tensor, t: int) -> Tensor:  # (B, C) at step t -> (B, C)
        if self.spec.kind == "layer":
            y, mean, rstd = torch.native_layer_norm(a, (a.shape[1],), self.weight, self.bias, self.spec.eps)
        else:
            y, mean, rstd = self._batch(a, t)
        self.mean.append(mean)
        self.rstd.append(rstd)
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

    def backward(self, dy: Tensor, a: Tensor, t: int) -> Tensor:
        """d loss / d input at step t (gain and bias gradients come from `param_grads`)."""
        sp, mask = self.spec, [True, False, False]
        if sp.kind == "layer":
            dx: Tensor = torch.ops.aten.native_layer_norm_backward(
                dy, a, (a.shape[1],), self.mean[t], self.rstd[t], self.weight, self.bias, mask)[0]
            return dx
        if sp.mode in ("train", "batch"):  # batch statistics: the gradient flows through them too
            dx = torch.ops.aten.native_batch_norm_backward(
                dy, a, self.weight, None, None, self.mean[t], self.rstd[t], True, sp.eps, mask)[0]
            return dx
        scale = self.rstd[t] if self.weight is None else self.rstd[t] * self.weight  # (C,) constants
        return dy * scale

    def param_grads(self, dy: Tensor, a: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Gain and bias gradients summed over all steps: dy, a (T, B, C)."""
        if self.weight is None and self.bias is None:
            return None, None
        T, B, C = a.shape
        if self.spec.kind == "layer":
            mean, rstd = torch.stack(self.mean).view(T * B, 1), torch.stack(self.rstd).view(T * B, 1)
            _, dw, db = torch.ops.aten.native_layer_norm_backward(
                dy.view(T * B, C), a.view(T * B, C), (C,), mean, rstd, self.weight, self.bias,
                [False, self.weight is not None, self.bias is not None])
            return dw, db
        xhat = (a - torch.stack(self.mean)[:, None]) * torch.stack(self.rstd)[:, None]  # (T, B, C)
        dw = (dy * xhat).sum((0, 1)) if self.weight is not None else None
        return dw, dy.sum((0, 1)) if self.bias is not None else None


# long function: the forward recurrence reads best as one loop, each line one fused kernel
def _recurrence(gx: Tensor, w_h: Tensor, norm_h: _StepNorm, norm_c: _StepNorm) -> tuple[Tensor, ...]:
    """The LSTM recurrence on time-major input pre-activations gx (T, B, 4H), gates i, f, g, o:

        gates_t = N_h(W_h h_{t-1}; t) + gx_t;  c_t = sig(f) c_{t-1} + sig(i) tanh(g);  h_t = sig(o) tanh(N_c(c_t; t))

    Returns out (T, B, H) and the buffers the backward needs: W_h h_{t-1}, the sigmoid of the gates,
    tanh(g), c_t, tanh(N_c(c_t)), each (T, B, .).
    """
    T, B, G = gx.shape
    H = G // 4
    out = gx.new_empty(T, B, H)
    a_all, act_all = gx.new_empty(T, B, G), gx.new_empty(T, B, G)
    g_all, c_all, tc_all = gx.new_empty(T, B, H), gx.new_empty(T, B, H), gx.new_empty(T, B, H)
    wt = w_h.t()  # (H, 4H)
    h: Tensor | None = None
    c: Tensor | None = None
    for t in range(T):
        a = a_all[t]  # (B, 4H)
        if h is None:
            a.zero_()  # h_{-1} = 0
        else:
            torch.mm(h, wt, out=a)
        y = norm_h.forward(a, t)
        y += gx[t]
        act = act_all[t]
        torch.sigmoid(y, out=act)  # all 4H in one kernel; the g quarter is unused (its tanh is in g_all)
        g = torch.tanh(y[:, 2 * H : 3 * H], out=g_all[t])  # a contiguous output is ~2x faster than a slice
        i, f, _, o = act.chunk(4, dim=1)  # (B, H) views
        c_new = c_all[t]
        if c is None:
            torch.mul(i, g, out=c_new)  # c_{-1} = 0
        else:
            torch.mul(f, c, out=c_new)
            c_new.addcmul_(i, g)
        c = c_new
        tc = torch.tanh(norm_c.forward(c, t), out=tc_all[t])
        h = torch.mul(o, tc, out=out[t])
    return out, a_all, act_all, g_all, c_all, tc_all


# long function: the reverse-time loop mirrors _recurrence step by step
def _recurrence_backward(grad_out: Tensor, w_h: Tensor, norm_h: _StepNorm, norm_c: _StepNorm,
                         saved: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of _recurrence: (d gx (T, B, 4H), d W_h (4H, H), d N_c output (T, B, H), W_h h_{t-1}).

    Per step: dh = dout_t + dh_rec;  do = dh tanh(N_c(c));  dN_c = dh o (1 - tanh^2);  dc = N_c'(dN_c) + dc_rec;
    di = dc g;  df = dc c_{t-1};  dg = dc i;  dc_rec = dc f;  d gates = those x the activations' derivatives;
    dh_rec = N_h'(d gates) W_h, and d W_h += N_h'(d gates)^T h_{t-1}.
    """
    out, a_all, act_all, g_all, c_all, tc_all = saved
    T, B, G = a_all.shape
    H = G // 4
    dgx = grad_out.new_empty(T, B, G)
    dcn_all = grad_out.new_empty(T, B, H)
    dw = w_h.new_zeros(G, H)
    one = grad_out.new_ones(())
    dh: Tensor | None = None
    dc_rec: Tensor | None = None
    for t in reversed(range(T)):
        dh_t = grad_out[t] if dh is None else grad_out[t] + dh
        act = act_all[t]
        i, f, _, o = act.chunk(4, dim=1)
        g = g_all[t]
        dgates = dgx[t]
        di, df, dg, do = dgates.chunk(4, dim=1)
        tc = tc_all[t]
        torch.mul(dh_t, tc, out=do)
        dcn = torch.mul(dh_t, o, out=dcn_all[t])
        dcn.addcmul_(dcn * tc, tc, value=-1.0)  # x (1 - tanh^2)
        dc = norm_c.backward(dcn, c_all[t], t)
        if dc_rec is not None:
            dc += dc_rec
        torch.mul(dc, g, out=di)
        if t > 0:
            torch.mul(dc, c_all[t - 1], out=df)
        else:
            df.zero_()
        torch.mul(dc, i, out=dg)
        dc_rec = dc * f
        deriv = torch.addcmul(act, act, act, value=-1.0)  # sigmoid' = s (1 - s)
        torch.addcmul(one, g, g, value=-1.0, out=deriv[:, 2 * H : 3 * H])  # tanh' = 1 - tanh^2
        dgates.mul_(deriv)
        if t > 0:  # h_{-1} = 0 is a constant: nothing flows further back from step 0
            da = norm_h.backward(dgates, a_all[t], t)  # (B, 4H)
            dw.addmm_(da.t(), out[t - 1])
            dh = torch.mm(da, w_h)  # (B, H)
    return dgx, dw, dcn_all, a_all


class _NormLSTMFunction(torch.autograd.Function):
    """(gx (T, B, 4H), W_h, N_h gain/bias, N_c gain/bias) -> h (T, B, H), with the hand-written backward."""

    @staticmethod
    def forward(ctx: Any, gx: Tensor, w_h: Tensor, wh: Tensor | None, bh: Tensor | None, wc: Tensor | None,
                bc: Tensor | None, spec_h: NormSpec, spec_c: NormSpec) -> Tensor:
        norm_h, norm_c = _StepNorm(spec_h, wh, bh), _StepNorm(spec_c, wc, bc)
        saved = _recurrence(gx, w_h, norm_h, norm_c)
        ctx.save_for_backward(w_h, *saved)
        ctx.norms = (norm_h, norm_c)
        return saved[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        w_h, *saved = ctx.saved_tensors
        norm_h, norm_c = ctx.norms
        with torch.autocast(grad_out.device.type, enabled=False):
            dgx, dw, dcn, a_all = _recurrence_backward(grad_out.contiguous(), w_h, norm_h, norm_c, tuple(saved))
            dwh, dbh = norm_h.param_grads(dgx, a_all)
            dwc, dbc = norm_c.param_grads(dcn, saved[4])
        return dgx, dw, dwh, dbh, dwc, dbc, None, None


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
