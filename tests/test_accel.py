"""train.compile and train.cuda_graph: the same losses as eager training where they run (compile on CPU,
through dynamo and AOT autograd), and a clean fallback with a one-line note where they cannot (no CUDA for
graphs, a compile backend that fails). The CUDA-graph capture itself needs a GPU: see docs/benchmarks.md
for what is still unmeasured."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from test_training import config, toy

from cryptonorm.config import TrainConfig
from cryptonorm.learn import accel
from cryptonorm.learn.loop import set_lr
from cryptonorm.learn.training import fit

torch.set_num_threads(1)


def _losses(res: Any) -> np.ndarray:
    return np.array([[h["train_loss"], h["val_loss"]] for h in res.history])


def test_compile_gives_the_eager_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "aot_eager")  # dynamo + autograd graphs, no C++ build
    ds = toy(n=200)
    eager = fit(ds, config(epochs=2, batch_size=64))
    compiled = fit(ds, config(epochs=2, batch_size=64, compile="default"))
    np.testing.assert_allclose(_losses(compiled), _losses(eager), rtol=1e-5)
    assert "trained eagerly" not in compiled.message
    for a, b in zip(eager.model.state_dict().values(), compiled.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # the real model was trained (not a copy)


def test_a_failing_compile_falls_back_to_eager_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: Any, **kwargs: Any) -> Any:
        def call(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C++ compiler found\nsecond line")  # as inductor fails at the first call
        return call

    monkeypatch.setattr(torch, "compile", broken)
    ds = toy(n=300)
    eager = fit(ds, config(epochs=2))
    res = fit(ds, config(epochs=2, compile="reduce-overhead"))
    np.testing.assert_array_equal(_losses(res), _losses(eager))
    note = res.message[res.message.index("train.compile="):]
    assert note == "train.compile=reduce-overhead failed (RuntimeError: no C++ compiler found); trained eagerly"


def test_compile_on_mps_is_skipped_with_a_note() -> None:
    model = torch.nn.Linear(2, 1)
    same, note = accel.compile_model(model, "default", torch.device("mps"))
    assert same is model and note == "train.compile=default is not used on MPS; trained eagerly"


def test_cuda_graph_without_cuda_trains_eagerly_with_a_note() -> None:
    ds = toy(n=300)
    eager = fit(ds, config(epochs=2))
    res = fit(ds, config(epochs=2, cuda_graph=True))
    np.testing.assert_array_equal(_losses(res), _losses(eager))
    assert res.message.endswith("train.cuda_graph needs a CUDA device (this fit: cpu); trained eagerly")


def test_tensor_learning_rates_are_set_in_place() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    lr = torch.tensor(0.1)
    opt = torch.optim.AdamW([p], lr=lr, capturable=False)
    set_lr(opt, 0.05)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.05)
    plain = torch.optim.AdamW([p], lr=0.1)
    set_lr(plain, 0.02)
    assert plain.param_groups[0]["lr"] == 0.02


def test_compile_key_is_closed() -> None:
    with pytest.raises(ValidationError, match="compile"):
        TrainConfig.model_validate({"compile": "max-autotune"})
    assert TrainConfig().compile == "none" and TrainConfig().cuda_graph is False
