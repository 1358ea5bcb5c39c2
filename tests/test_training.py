"""Training: every model trains, batch-size edge cases, early stopping, non-finite losses, seeds,
checkpoints, and learning a planted signal (and not learning noise). Small and CPU-only."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cryptonorm.config import Config, ModelConfig, TargetConfig, TrainConfig
from cryptonorm.errors import ConfigError, TrainingError
from cryptonorm.learn.checkpoints import load_checkpoint, save_checkpoint
from cryptonorm.learn.device import resolve_device, seed_everything
from cryptonorm.learn.models import build_model
from cryptonorm.learn.training import FitResult, fit, learning_rate, predict, target_stats

torch.set_num_threads(1)


@dataclass(frozen=True)
class ToyDataset:
    """The fields of dataset.Dataset that training reads."""

    X: np.ndarray  # (N, F) float32
    y: np.ndarray  # (N,) float32
    train_idx: np.ndarray  # END rows, int64
    val_idx: np.ndarray
    test_idx: np.ndarray
    window: int


def toy(n: int = 400, signal: float = 0.5, window: int = 6, n_features: int = 3, seed: int = 0,
        direction: bool = False) -> ToyDataset:
    """Log-return-sized targets: y[t] = 1e-3 * (signal * X[t, 0] + noise); chronological splits with a gap."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    y = 1e-3 * (signal * X[:, 0] + rng.standard_normal(n))
    if direction:
        y = (y > 0).astype(np.float64)
    ends = np.arange(window - 1, n, dtype=np.int64)
    a, b = int(0.6 * len(ends)), int(0.8 * len(ends))
    # an embargo of `window` rows between splits, as dataset.py does
    return ToyDataset(X, y.astype(np.float32), ends[:a], ends[a + window : b], ends[b + window :], window)


def config(kind: str = "mlp", norm: str = "layer", placement: str = "layer", *, loss: str = "auto",
           seed: int = 0, **train: Any) -> Config:
    t = {"epochs": 1, "batch_size": 64, "device": "cpu", **train}
    return Config(
        seed=seed,
        model=ModelConfig.model_validate(
            {"kind": kind, "norm": norm, "norm_placement": placement, "hidden": [16, 8], "groups": 4}
        ),
        target=TargetConfig.model_validate({"kind": "direction" if loss == "bce" else "return", "loss": loss}),
        train=TrainConfig.model_validate(t),
    )


COMBOS = (
    [("mlp", n, "layer") for n in ["none", "batch", "layer", "group", "rms", "weight"]]
    + [("lstm", n, "layer") for n in ["none", "batch", "layer", "group", "instance", "rms", "weight"]]
    + [("lstm", "layer", "cell"), ("lstm", "batch", "cell")]
)


@pytest.mark.parametrize(("kind", "norm", "placement"), COMBOS, ids=[f"{k}-{n}-{p}" for k, n, p in COMBOS])
def test_every_model_trains_one_epoch(kind: str, norm: str, placement: str) -> None:
    ds = toy()
    seen: list[dict[str, Any]] = []
    res = fit(ds, config(kind, norm, placement), progress=seen.append)
    assert res.stopped == "completed" and res.best_epoch == 1 and res.device == "cpu"
    (h,) = res.history
    assert seen == res.history
    assert set(h) == {"epoch", "epochs", "train_loss", "val_loss", "lr", "seconds", "samples_per_s", "best", "steps"}
    assert math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) and h["samples_per_s"] > 0
    assert not res.model.training
    pred = predict(res.model, ds, ds.test_idx)
    assert pred.shape == (len(ds.test_idx),) and pred.dtype == np.float64 and np.isfinite(pred).all()
    # predictions are in the target's units (~1e-3), not the standardized ones (~1)
    assert np.abs(pred).max() < 0.02


def test_direction_models_predict_probabilities() -> None:
    ds = toy(direction=True)
    res = fit(ds, config(loss="bce", epochs=2))
    p = predict(res.model, ds, ds.test_idx)
    assert ((p > 0) & (p < 1)).all()
    assert res.model.output == "logit"
    assert float(res.model.y_mean) == 0.0 and float(res.model.y_std) == 1.0  # 0/1 labels are not rescaled


def test_target_standardized_with_train_stats_only() -> None:
    ds = toy()
    res = fit(ds, config(loss="huber"))
    y_train = ds.y[ds.train_idx].astype(np.float64)
    assert float(res.model.y_mean) == pytest.approx(y_train.mean(), rel=1e-5)
    assert float(res.model.y_std) == pytest.approx(y_train.std(), rel=1e-5)
    assert target_stats(np.array([1.0, 1.0]), "mse") == (1.0, 1.0)  # constant target: std falls back to 1
    assert target_stats(np.array([0.0, 2.0, np.inf]), "mse") == (1.0, 1.0)  # non-finite labels ignored


@pytest.mark.parametrize("placement", ["layer", "cell"])
def test_batch_norm_needs_batches_of_two(placement: str) -> None:
    from cryptonorm.config import build_config

    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 2 for model.norm=batch"):
        build_config({"model": {"kind": "lstm", "norm": "batch", "norm_placement": placement},
                      "train": {"batch_size": 1}})  # the config alone is refused (config validate, train, sweep)
    cfg = config("lstm", "batch", placement)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 1})})  # skips validation
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 2 for model.norm=batch"):
        fit(toy(), cfg)


@pytest.mark.parametrize(("kind", "placement"), [("mlp", "layer"), ("lstm", "layer"), ("lstm", "cell")])
def test_batch_remainder_of_one_does_not_crash(kind: str, placement: str) -> None:
    ds = toy()
    ds = replace(ds, train_idx=ds.train_idx[:65])  # 64 + 1
    res = fit(ds, config(kind, "batch", placement, epochs=2))
    assert res.stopped == "completed" and all(math.isfinite(h["train_loss"]) for h in res.history)
    # without batch statistics the lone sample is kept: a batch of one is fine for LayerNorm
    assert fit(ds, config(kind, "layer", placement)).stopped == "completed"


def test_instance_norm_needs_a_window_of_two() -> None:
    with pytest.raises(ConfigError, match=r"features.window >= 2"):
        fit(toy(window=1), config("lstm", "instance"))


def test_single_training_sample_with_batch_norm_is_a_clear_error() -> None:
    ds = toy()
    with pytest.raises(TrainingError, match="at least 2 training samples"):
        fit(replace(ds, train_idx=ds.train_idx[:1]), config("mlp", "batch"))


def test_early_stopping_keeps_the_best_epoch() -> None:
    ds = toy(signal=0.0, n=300)  # pure noise, big lr: the validation loss soon stops improving
    res = fit(ds, config("mlp", "none", epochs=40, patience=2, lr=1e-2, schedule="none"))
    assert res.stopped == "early_stop"
    val = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(val)) + 1
    assert len(res.history) == res.best_epoch + 2 < 40
    assert res.best_loss == min(val)
    assert [h["best"] for h in res.history].count(True) >= 1 and "early stop" in res.message
    # the returned model holds the best epoch's weights: its val loss is the best one
    pred = predict(res.model, ds, ds.val_idx)
    z = (ds.y[ds.val_idx] - float(res.model.y_mean)) / float(res.model.y_std)
    zp = (pred - float(res.model.y_mean)) / float(res.model.y_std)
    huber = torch.nn.HuberLoss()(torch.tensor(zp), torch.tensor(z, dtype=torch.float64)).item()
    assert huber == pytest.approx(res.best_loss, rel=1e-4)


def test_non_finite_first_epoch_keeps_initial_weights() -> None:
    ds = toy()
    y = ds.y.copy()
    y[ds.train_idx[10]] = np.inf
    res = fit(replace(ds, y=y), config("mlp", "batch", epochs=5, loss="mse"))
    assert res.stopped == "non_finite_loss" and res.best_epoch == 0 and len(res.history) == 1
    assert not math.isfinite(res.history[0]["train_loss"])
    assert "not finite" in res.message and "initial weights" in res.message
    seed_everything(0, False)
    fresh = build_model(config("mlp", "batch").model, 3, ds.window)
    for (k, a), (_, b) in zip(res.model.state_dict().items(), fresh.state_dict().items(), strict=True):
        if k not in ("y_mean", "y_std"):
            assert torch.equal(a, b), k  # weights AND BatchNorm running stats are the untouched initial ones
    assert np.isfinite(predict(res.model, ds, ds.test_idx)).all()


def test_diverging_training_stops_and_keeps_the_best_weights(tmp_path: Path) -> None:
    # AdamW's decoupled decay multiplies weights by (1 - lr * wd) = -2 per step: they blow up in a few epochs
    ds = toy(n=500)
    cfg = config("mlp", "none", epochs=20, lr=30.0, weight_decay=0.1, grad_clip=None, schedule="none",
                 patience=20, loss="mse")
    ckpt = tmp_path / "best.pt"
    res = fit(ds, cfg, checkpoint=ckpt)
    assert res.stopped == "non_finite_loss" and 1 <= res.best_epoch < len(res.history)
    assert all(math.isfinite(h["train_loss"]) for h in res.history[:-1])
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    # the checkpoint was written at the best epoch: the returned model equals it exactly
    loaded, meta = load_checkpoint(ckpt)
    assert meta["extra"]["epoch"] == res.best_epoch
    np.testing.assert_array_equal(predict(loaded, ds, ds.val_idx), predict(res.model, ds, ds.val_idx))


def test_same_seed_same_history_different_seed_different() -> None:
    ds = toy()
    for kind, norm, placement in [("mlp", "batch", "layer"), ("lstm", "batch", "cell")]:
        runs = [fit(ds, config(kind, norm, placement, epochs=3, seed=s)) for s in (7, 7, 8)]

        def losses(r: FitResult) -> list[tuple[float, float]]:
            return [(h["train_loss"], h["val_loss"]) for h in r.history]

        assert losses(runs[0]) == losses(runs[1])
        assert losses(runs[0]) != losses(runs[2])
        np.testing.assert_array_equal(predict(runs[0].model, ds, ds.test_idx), predict(runs[1].model, ds, ds.test_idx))


def test_training_never_reads_rows_outside_the_training_and_validation_windows() -> None:
    ds = toy()
    first_test_row = int(ds.test_idx[0]) - ds.window + 1
    X = ds.X.copy()
    X[first_test_row:] = 1e6  # poison every row only test windows use
    a = fit(ds, config("lstm", "batch", epochs=2))
    b = fit(replace(ds, X=X), config("lstm", "batch", epochs=2))
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


@pytest.mark.parametrize(("kind", "norm", "placement", "loss"), [
    ("mlp", "weight", "layer", "huber"),
    ("mlp", "batch", "layer", "bce"),
    ("lstm", "weight", "layer", "mse"),
    ("lstm", "batch", "cell", "huber"),
    ("lstm", "layer", "cell", "bce"),
])
def test_checkpoint_round_trip(tmp_path: Path, kind: str, norm: str, placement: str, loss: str) -> None:
    ds = toy(direction=loss == "bce")
    cfg = config(kind, norm, placement, loss=loss, epochs=2)
    res = fit(ds, cfg)
    path = save_checkpoint(tmp_path / "sub" / "model.pt", res.model, cfg, 3, ds.window, extra={"note": "x"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left behind
    model, meta = load_checkpoint(path)
    assert meta["window"] == ds.window and meta["n_features"] == 3 and meta["extra"] == {"note": "x"}
    assert meta["target"]["output"] == ("logit" if loss == "bce" else "value")
    assert ModelConfig.model_validate(meta["model"]) == cfg.model
    json.dumps(meta)  # JSON-safe
    np.testing.assert_array_equal(predict(model, ds, ds.test_idx), predict(res.model, ds, ds.test_idx))


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot load checkpoint"):
        load_checkpoint(bad)


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        for spec in ("cuda", "cuda:1"):
            with pytest.raises(TrainingError, match="CUDA is not available"):
                resolve_device(spec)
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_schedules() -> None:
    assert learning_rate(0, 100, 1e-3, "cosine") == 1e-3
    assert learning_rate(50, 100, 1e-3, "cosine") == pytest.approx(5e-4)
    assert learning_rate(100, 100, 1e-3, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(70, 100, 1e-3, "none") == 1e-3
    res = fit(toy(), config(epochs=3, schedule="cosine"))
    lrs = [h["lr"] for h in res.history]
    assert lrs[0] > lrs[1] > lrs[2] >= 0 and lrs[2] < 0.03 * 1e-3  # the last step's lr: ~0 at the end
    noise = toy(signal=0.0, n=300)
    res = fit(noise, config("mlp", "none", epochs=12, schedule="plateau", patience=4, lr=1e-2))
    assert min(h["lr"] for h in res.history) < 1e-2  # halved after the val loss stalled


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_learns_a_planted_signal_but_not_noise(kind: str) -> None:
    """Directional accuracy on the held-out test split (~1000 samples: one standard error ~0.016).
    With signal 0.6 the best possible accuracy is ~0.67; with noise it is 0.5."""
    results = {}
    for signal in (0.6, 0.0):
        ds = toy(n=5000, signal=signal, window=8, n_features=4, seed=1)
        cfg = config(kind, "layer", epochs=6, patience=3, seed=1)
        pred = predict(fit(ds, cfg).model, ds, ds.test_idx)
        results[signal] = float(np.mean(np.sign(pred) == np.sign(ds.y[ds.test_idx])))
    assert results[0.6] > 0.58, results  # ~6 standard errors above chance
    assert results[0.0] < 0.57, results  # ~4 standard errors above chance


def test_deterministic_mode_on_cpu() -> None:
    try:
        runs = [fit(toy(), config("lstm", "layer", "cell", deterministic=True, epochs=2)) for _ in range(2)]
        assert torch.are_deterministic_algorithms_enabled()
        assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    finally:
        seed_everything(0, False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_fused_adamw_only_where_torch_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """AdamW(fused=True) on CPU parameters needs torch >= 2.4 (pyproject allows 2.2): older versions train
    with the default AdamW instead of failing."""
    from cryptonorm.learn.training import fused_adamw

    monkeypatch.setattr(torch, "__version__", "2.3.1+cpu")
    assert not fused_adamw(torch.device("cpu"))
    assert fused_adamw(torch.device("cuda"))
    assert not fused_adamw(torch.device("mps"))
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert fused_adamw(torch.device("cpu"))
    p = torch.nn.Parameter(torch.ones(3))  # and the real torch here runs it on the CPU
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.0, fused=fused_adamw(torch.device("cpu")))
    p.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.9))  # Adam's first step: lr * sign(grad)
