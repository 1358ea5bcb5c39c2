"""learn/members.py: M MLP members stepped as one batched model equal each member trained alone with the
project's own `learn.loop.train_step` (AdamW, gradient clipping, BatchNorm running statistics per member)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cryptonorm.config import ModelConfig
from cryptonorm.learn.loop import train_step
from cryptonorm.learn.members import Members, members_step
from cryptonorm.learn.models import build_model

W, F, B, M, STEPS = 8, 5, 32, 4, 6


def _models(norm: str) -> list[nn.Module]:
    cfg = ModelConfig.model_validate({"kind": "mlp", "norm": norm, "hidden": [16, 8], "dropout": 0.0})
    out = []
    for seed in range(M):
        torch.manual_seed(seed)  # each member its own initialization, as its own cell would have
        out.append(build_model(cfg, F, W))
    return out


def _cancelled(model: nn.Module) -> set[str]:
    """State entries a BatchNorm cancels: the bias of a Linear right before it (its gradient is 0 up to
    rounding, and Adam turns rounding into steps of size lr, alone as in the stack, differently) and the
    running mean that absorbs that bias. The losses and the forecasts, which they do not change, are compared."""
    names = dict(model.named_modules())
    out = set()
    for name, mod in names.items():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (a, first), (b, second) in zip(kids, kids[1:], strict=False):
                if isinstance(first, nn.Linear) and "BatchNorm" in type(second).__name__:
                    out |= {f"{name}.{a}.bias", f"{name}.{b}.running_mean"}
    return out


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_members_step_equals_each_member_alone(norm: str, clip: float | None) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(STEPS, M, B, W, F, generator=gen)  # each member its own batches
    ys = torch.randn(STEPS, M, B, generator=gen)
    alone = _models(norm)
    members = Members(_models(norm)).train()
    opt = torch.optim.AdamW(members.parameters(), lr=3e-3, weight_decay=1e-2)
    opts = [torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=1e-2) for m in alone]
    loss_fn = nn.MSELoss()
    for step in range(STEPS):
        got = members_step(members, opt, loss_fn, xs[step], ys[step], clip)
        for i, (model, o) in enumerate(zip(alone, opts, strict=True)):
            model.train()
            want = train_step(model, o, loss_fn, xs[step, i], ys[step, i], clip, False)
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-6)
    for i, model in enumerate(alone):
        state = members.state_dict(i)
        ref = model.state_dict()
        assert state.keys() == ref.keys()
        free = _cancelled(model)
        for k, v in ref.items():
            if k not in free:
                torch.testing.assert_close(state[k], v, rtol=1e-5, atol=1e-6, msg=f"member {i} {k}")
        if norm == "batch":  # the running statistics moved, and differ between members
            assert any("running_mean" in k and v.abs().sum() > 0 for k, v in ref.items())
    if norm == "batch":
        rm = [k for k in members.buffers if k.endswith("running_mean")][0]
        assert not torch.allclose(members.buffers[rm][0], members.buffers[rm][1])
    # evaluation with the running statistics: the stacked forecasts are each member's own state's, evaluated by
    # the plain model (with BatchNorm, the model trained alone differs in the cancelled entries only)
    members.train(False)
    x = torch.randn(M, B, W, F, generator=gen)
    with torch.no_grad():
        out = members(x)
        for i, model in enumerate(alone):
            own = _models(norm)[0]
            own.load_state_dict(members.state_dict(i))
            own.eval()
            torch.testing.assert_close(out[i], own(x[i]), rtol=1e-5, atol=1e-6)
            if norm != "batch":
                model.eval()
                torch.testing.assert_close(out[i], model(x[i]), rtol=1e-5, atol=1e-6)


def test_dropout_is_refused() -> None:
    cfg = ModelConfig.model_validate({"kind": "mlp", "norm": "batch", "hidden": [8], "dropout": 0.2})
    with pytest.raises(ValueError, match="dropout"):
        Members([build_model(cfg, F, W), build_model(cfg, F, W)])
