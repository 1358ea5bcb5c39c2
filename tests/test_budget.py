"""Like-for-like training budgets across batch sizes (train.budget, train.lr_scaling). Small and CPU-only."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from cryptonorm.config import build_config
from cryptonorm.errors import ConfigError
from cryptonorm.learn.budget import plan
from cryptonorm.learn.training import fit
from tests.test_training import config, toy

torch.set_num_threads(1)


def _fit_steps(batch_size: int, **train: Any) -> tuple[list[dict[str, Any]], int]:
    ds = toy(n=300)
    cfg = config(norm="batch", batch_size=batch_size, schedule="none", patience=1000, **train)
    res = fit(ds, cfg, "cpu")
    n_batches = math.ceil(len(ds.train_idx) / batch_size) - (len(ds.train_idx) % batch_size == 1)
    return res.history, n_batches


@pytest.mark.parametrize("budget", [{"budget": "steps", "steps": 40}, {"budget": "samples", "samples": 512}])
def test_batch_2_and_256_get_equal_steps_or_samples(budget: dict[str, Any]) -> None:
    steps = {}
    for bs in (2, 256):
        history, n_batches = _fit_steps(bs, **budget)
        steps[bs] = history[-1]["steps"]
        assert history[-1]["epochs"] == len(history) == math.ceil(steps[bs] / n_batches)  # last pass cut short
    if budget["budget"] == "steps":
        assert steps == {2: 40, 256: 40}
    else:  # the same samples seen: steps x batch size = 512 for both
        assert steps == {2: 256, 256: 2} and 2 * steps[2] == 256 * steps[256] == 512


def test_epoch_budget_gives_small_batches_more_steps() -> None:
    h2, n2 = _fit_steps(2, epochs=1)
    h256, n256 = _fit_steps(256, epochs=1)
    assert (h2[-1]["steps"], h256[-1]["steps"]) == (n2, n256) and n2 > 50 * n256


@pytest.mark.parametrize(("scaling", "factor"), [("none", 1.0), ("linear", 64 / 256), ("sqrt", (64 / 256) ** 0.5)])
def test_lr_scaling_by_batch_size(scaling: str, factor: float) -> None:
    history, _ = _fit_steps(64, epochs=1, lr=1e-3, lr_scaling=scaling, lr_reference_batch=256)
    assert history[0]["lr"] == pytest.approx(1e-3 * factor)


def test_budget_plan_and_cosine_length() -> None:
    t = config(batch_size=32, budget="steps", steps=25).train
    b = plan(t, n_batches=10)
    assert (b.epochs, b.total_steps, [b.batches_in(e) for e in (1, 2, 3, 4)]) == (3, 25, [10, 10, 5, 0])


@pytest.mark.parametrize(("train", "expected"), [
    ({"budget": "steps"}, "train.budget steps needs train.steps"),
    ({"samples": 1000}, "train.samples is only used with train.budget: samples"),
    ({"budget": "tokens"}, "train.budget"),
    ({"lr_scaling": "cubic"}, "train.lr_scaling"),
])
def test_bad_budget_keys_name_the_key(train: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_config({"train": train}, source="x.yaml")
