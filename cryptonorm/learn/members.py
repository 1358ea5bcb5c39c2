"""Many members (seeds) of one architecture trained as one batched model (torch.func), a building block for
`train.members` (issue 32): NOT wired into the training loop or the config yet.

The members' parameters and buffers are stacked on a leading member axis (`torch.func.stack_module_state`) and
one forward runs every member on its own batch through `vmap(functional_call)`: (M, B, W, F) -> (M, B).
BatchNorm's running statistics are buffers, stacked like the weights, so each member keeps its own. The loss
is the sum of the members' mean losses, so each member's gradient is that of its own loss alone; AdamW acts
elementwise, so one optimizer over the stacked tensors steps every member as its own optimizer would; the
gradient norm is clipped per member, as `clip_grad_norm_` clips each model alone. Dropout is not supported
(each member would need its own random stream to match training it alone).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class Members:
    """M models of one architecture as one batched model; `params` and `buffers` hold (M, ...) tensors."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise ValueError("Members needs at least one model")
        if any(isinstance(m, nn.Dropout) and m.p > 0 for model in models for m in model.modules()):
            raise ValueError("Members: dropout > 0 is not supported (each member needs its own random stream)")
        self.size = len(models)
        self.params, self.buffers = stack_module_state(list(models))  # type: ignore[arg-type]
        self._base = copy.deepcopy(models[0]).to("meta")  # the architecture alone, no storage

    def train(self, mode: bool = True) -> Members:
        self._base.train(mode)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, W, F) windows, one batch per member -> (M, B) forecasts."""
        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (p, b), (xb,))  # type: ignore[no-any-return]

        return vmap(one)(self.params, self.buffers, x)  # type: ignore[no-any-return]

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """One member's state, loadable into a model of the architecture (`load_state_dict`)."""
        return {k: v[member].detach().clone() for k, v in {**self.params, **self.buffers}.items()}


def clip_per_member(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradients (axis 0 of every tensor) as `nn.utils.clip_grad_norm_` scales one model's:
    by max_norm / (norm + 1e-6) where that is below 1. Returns the (M,) norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(len(g), -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (M,)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return norms


def members_step(members: Members, opt: torch.optim.Optimizer, loss_fn: nn.Module, xb: torch.Tensor,
                 yb: torch.Tensor, grad_clip: float | None) -> torch.Tensor:
    """One optimizer step of every member on its own (B, W, F) batch: xb (M, B, W, F), yb (M, B) -> (M,) the
    detached mean loss of each member (the steps of `learn.loop.train_step`, per member, in float32)."""
    out = members(xb)  # (M, B)
    losses = torch.stack([loss_fn(out[m], yb[m]) for m in range(members.size)])  # (M,)
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()  # each member's parameters get the gradient of its own loss alone
    if grad_clip is not None:
        clip_per_member(members.parameters(), grad_clip)
    opt.step()
    return losses.detach()
