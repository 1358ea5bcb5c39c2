"""Resume: a training state saved after epoch k and resumed gives the same history and weights as an
uninterrupted run (CPU, same seed), for schedules, dropout and BatchNorm; through the CLI too."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from cryptonorm.learn.loop import TrainState
from cryptonorm.learn.training import fit
from tests.test_training import config, toy

torch.set_num_threads(1)

LOSSES = ("epoch", "train_loss", "val_loss", "lr", "best")


def _losses(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(h[k] for k in LOSSES) for h in history]


def _snapshot(state: TrainState) -> dict[str, Any]:
    """A deep copy through torch.save/load(weights_only=True): what a checkpoint file would hold."""
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    loaded: dict[str, Any] = torch.load(buf, weights_only=True)
    return loaded


@pytest.mark.parametrize(("kind", "norm", "schedule"), [("mlp", "batch", "cosine"), ("lstm", "layer", "plateau")])
def test_resumed_fit_equals_uninterrupted(kind: str, norm: str, schedule: str) -> None:
    base = config(kind, norm, epochs=6, patience=100, schedule=schedule)
    cfg = base.model_copy(update={"model": base.model.model_copy(update={"dropout": 0.2})})  # RNG-dependent
    ds = toy(n=300)
    saved: dict[int, dict[str, Any]] = {}
    full = fit(ds, cfg, on_epoch_end=lambda s: saved.__setitem__(s.epoch, _snapshot(s)))
    assert sorted(saved) == [1, 2, 3, 4, 5]  # after every epoch training goes on from
    resumed = fit(ds, cfg, resume=saved[3])
    assert _losses(resumed.history) == _losses(full.history)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and a different stopping point: the history is not just copied from the state
    assert _losses(fit(ds, cfg, resume=saved[1]).history) == _losses(full.history)
    assert len(saved[3]["history"]) == 3


@pytest.mark.parametrize("budget", [{"budget": "steps", "steps": 10}, {"budget": "samples", "samples": 300}])
def test_resume_under_a_step_or_sample_budget(budget: dict[str, Any]) -> None:
    """train.budget steps|samples runs budget.epochs passes (not train.epochs): a state is saved after every
    pass training goes on from, and a run resumed from any of them ends as the uninterrupted one (issue 23)."""
    # 116 training samples: 4 batches a pass; 10 steps: 3 passes, the last cut short
    cfg = config("mlp", "batch", batch_size=32, patience=100, **budget)
    ds = toy(n=200)
    saved: dict[int, dict[str, Any]] = {}
    full = fit(ds, cfg, on_epoch_end=lambda s: saved.__setitem__(s.epoch, _snapshot(s)))
    assert len(full.history) == 3 and full.history[-1]["steps"] == 10
    assert sorted(saved) == [1, 2]
    for epoch in saved:
        resumed = fit(ds, cfg, resume=saved[epoch])
        assert _losses(resumed.history) == _losses(full.history)
        a, b = full.model.state_dict(), resumed.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
