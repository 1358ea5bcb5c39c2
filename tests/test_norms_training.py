"""The norms for non-stationary markets through training, checkpoints and the CLI: recalibration after
`fit` on the latest training windows (stored in the checkpoint, per fold in walk-forward), RevIN's
target column, `bn_eval: batch` at prediction, and train/predict/backtest end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import Config, ModelConfig, TargetConfig, TrainConfig
from cryptonorm.errors import TrainingError
from cryptonorm.features.scaling import Scaler
from cryptonorm.learn.checkpoints import load_checkpoint
from cryptonorm.learn.input_norms import RevIN
from cryptonorm.learn.norms import BatchNorm, BatchRenorm, StepBatchNorm
from cryptonorm.learn.training import fit, gather_windows, predict

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")


@dataclass(frozen=True)
class NamedToy:
    """The Dataset fields fit reads, with feature names and a scaler (for RevIN's target column)."""

    X: np.ndarray  # (N, F) float32
    y: np.ndarray  # (N,) float32
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    window: int
    feature_names: list[str]
    scaler: Scaler


def named_toy(n: int = 300, window: int = 6) -> NamedToy:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((n, 3)) * np.array([0.01, 1.0, 5.0]) + np.array([0.0, 50.0, 1.0])
    scaler = Scaler("standard").fit(raw, names=["logret_1", "rsi_14", "volz_24"])
    X = scaler.transform(raw)
    y = np.roll(raw[:, 0], -1).astype(np.float32)  # next bar's log return
    ends = np.arange(window - 1, n - 1, dtype=np.int64)
    a, b = int(0.6 * len(ends)), int(0.8 * len(ends))
    return NamedToy(X, y, ends[:a], ends[a + window : b], ends[b + window :], window,
                    ["logret_1", "rsi_14", "volz_24"], scaler)


def cfg_for(kind: str = "mlp", norm: str = "batch", placement: str = "layer", epochs: int = 2,
            batch_size: int = 32, **model: Any) -> Config:
    return Config(
        model=ModelConfig.model_validate({"kind": kind, "norm": norm, "norm_placement": placement,
                                          "hidden": [8, 8], "groups": 2, **model}),
        target=TargetConfig(),
        train=TrainConfig.model_validate({"epochs": epochs, "batch_size": batch_size, "device": "cpu"}),
    )


def stats_seen_at_inference(model: nn.Module, windows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor, torch.Tensor]]:
    """For every batch-statistics module (and step): (stored mean, stored var, mean and unbiased var of the
    inputs it receives in an ordinary eval-mode pass over `windows`)."""
    seen: dict[tuple[int, int], torch.Tensor] = {}
    mods = [m for m in model.modules() if isinstance(m, (BatchNorm, BatchRenorm, StepBatchNorm))]

    def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        seen[(id(mod), int(args[1]) if len(args) > 1 else 0)] = args[0].detach().double()

    handles = [m.register_forward_pre_hook(hook) for m in mods]
    with torch.no_grad():
        model.eval()(windows)
    for h in handles:
        h.remove()
    out = []
    for (mid, t), x in seen.items():
        m = next(mm for mm in mods if id(mm) == mid)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 3 else x.T  # (C, values)
        rm = m.running_mean[t] if isinstance(m, StepBatchNorm) else m.running_mean
        rv = m.running_var[t] if isinstance(m, StepBatchNorm) else m.running_var
        out.append((rm.double(), rv.double(), flat.mean(1), flat.var(1, unbiased=True)))
    return out


@pytest.mark.parametrize(("kind", "norm", "placement", "bars"), [
    ("mlp", "batch", "layer", 10_000), ("mlp", "batchrenorm", "layer", 50), ("lstm", "batch", "cell", 10_000),
])
def test_fit_recalibrates_on_the_latest_training_windows_and_stores_it(
    tmp_path: Path, kind: str, norm: str, placement: str, bars: int
) -> None:
    ds = named_toy()
    cfg = cfg_for(kind, norm, placement, bn_eval="recalibrate", bn_recalibrate_bars=bars)
    res = fit(ds, cfg, checkpoint=tmp_path / "model.pt")
    used = min(bars, len(ds.train_idx))
    assert f"recalibrated on the last {used} training windows" in res.message
    model, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["extra"]["bn_recalibrated_windows"] == used
    X = torch.as_tensor(ds.X)
    offsets = torch.arange(-ds.window + 1, 1)
    recent = gather_windows(X, torch.as_tensor(ds.train_idx[-used:]), offsets)  # the latest `used` windows
    for loaded in (model, res.model):  # the checkpoint holds the recalibrated statistics, as fit's model does
        rows = stats_seen_at_inference(loaded, recent)
        assert len(rows) == (2 if placement == "layer" else 2 * 3 * ds.window)
        for rm, rv, mean, var in rows:
            torch.testing.assert_close(rm, mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(rv, var, rtol=1e-4, atol=1e-5)
    if used < len(ds.train_idx):  # statistics of the recent windows only, not of all of them
        everything = gather_windows(X, torch.as_tensor(ds.train_idx), offsets)
        rm, _, mean, _ = stats_seen_at_inference(model, everything)[0]
        assert not torch.allclose(rm, mean, rtol=1e-3, atol=1e-4)


def test_running_statistics_are_not_population_statistics() -> None:
    """The property above is not automatic: with bn_eval running it does not hold."""
    ds = named_toy()
    res = fit(ds, cfg_for("mlp", "batch"))
    windows = gather_windows(torch.as_tensor(ds.X), torch.as_tensor(ds.train_idx), torch.arange(-ds.window + 1, 1))
    rm, rv, mean, var = stats_seen_at_inference(res.model, windows)[0]
    assert not (torch.allclose(rm, mean, rtol=1e-3, atol=1e-4) and torch.allclose(rv, var, rtol=1e-3, atol=1e-4))


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_fit_gives_revin_the_targets_column_and_checkpoints_keep_it(tmp_path: Path, kind: str) -> None:
    ds = named_toy()
    res = fit(ds, cfg_for(kind, "layer", input_norm="revin"), checkpoint=tmp_path / "model.pt")
    assert "RevIN de-normalizes the forecast with the window statistics of logret_1" in res.message
    assert isinstance(res.model.input_norm, RevIN) and res.model.input_norm.target == 0
    assert float(res.model.input_norm.target_scale) == pytest.approx(ds.scaler.scale[0])
    model, _ = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(model.input_norm, RevIN) and model.input_norm.target == 0
    np.testing.assert_allclose(predict(model, ds, ds.test_idx), predict(res.model, ds, ds.test_idx), rtol=1e-6)
    off = fit(ds, cfg_for(kind, "layer", input_norm="revin", revin_denorm="off"))
    assert isinstance(off.model.input_norm, RevIN) and off.model.input_norm.target is None
    assert "RevIN" not in off.message


@pytest.mark.parametrize(("kind", "norm", "extra"), [
    ("mlp", "batchrenorm", {}), ("lstm", "batchrenorm", {}), ("mlp", "layer", {"input_norm": "dain"}),
    ("lstm", "batch", {"input_norm": "dain", "bn_eval": "recalibrate"}),
    ("lstm", "batch", {"input_norm": "revin", "bn_eval": "batch"}),
])
def test_every_new_option_trains_and_predicts(kind: str, norm: str, extra: dict[str, Any]) -> None:
    ds = named_toy()
    res = fit(ds, cfg_for(kind, norm, **extra))
    assert res.stopped in ("completed", "early_stop") and res.best_epoch >= 1
    pred = predict(res.model, ds, ds.test_idx)
    assert pred.shape == (len(ds.test_idx),) and np.isfinite(pred).all()


def test_bn_eval_batch_prediction_never_normalizes_a_batch_of_one() -> None:
    ds = named_toy()
    res = fit(ds, cfg_for("mlp", "batch", bn_eval="batch"))
    idx = ds.test_idx[:9]
    pred = predict(res.model, ds, idx, batch_size=4)  # chunks 4, 4, 1 -> 4, 5
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred[4:], predict(res.model, ds, idx[4:], batch_size=5), rtol=1e-6)
    with pytest.raises(TrainingError, match="cannot forecast a single window"):
        predict(res.model, ds, idx[:1])


def test_batch_renorm_needs_batches_of_two() -> None:
    # the config itself refuses it now, as fit does (tests/test_norm_facts.py: the same line in both)
    with pytest.raises(ValueError, match=r"train.batch_size must be >= 2 for model.norm=batchrenorm"):
        fit(named_toy(), cfg_for("mlp", "batchrenorm", batch_size=1))


# ---------------------------------------------------------------- the CLI, end to end

runner = CliRunner()
SMALL = ["--set", "train.epochs=1", "--set", "model.hidden=[16, 16]", "--set", "train.threads=1"]


def _cli(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_walk_forward_with_revin_and_recalibrated_batch_norm_then_predict_and_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "wf"
    code, _, err = _cli("train", QUICK, *SMALL, "--out", str(out), "--set", "model.norm=batch",
                        "--set", "model.bn_eval=recalibrate", "--set", "model.bn_recalibrate_bars=500",
                        "--set", "model.input_norm=revin", "--set", "backtest.walk_forward.enabled=true",
                        "--set", "backtest.walk_forward.step=3000", "--set", "backtest.walk_forward.train_bars=4000")
    assert code == 0, err
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) >= 2
    _, meta = load_checkpoint(out / "model.pt")  # the last fold's model, recalibrated on its own windows
    assert meta["extra"]["bn_recalibrated_windows"] == 500
    assert meta["model"]["batch_norm"]["eval"] == "recalibrate" and meta["model"]["input_norm"] == "revin"
    # predict rebuilds the last fold's forecasts from the checkpoint alone
    code, _, err = _cli("predict", str(out), "-o", str(tmp_path / "pred.csv"))
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "pred.csv").set_index("timestamp")["forecast"]
    f = pd.read_csv(out / "forecasts.csv").set_index("timestamp")
    last = f[(f["split"] == "test") & (f.index >= folds["test_start"].iloc[-1])]
    np.testing.assert_allclose(pred.loc[last.index].to_numpy(), last["forecast"].to_numpy(), rtol=1e-4, atol=1e-9)
    code, stdout, err = _cli("backtest", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["bars"] > 3000


def test_nonsense_combinations_are_one_line_config_errors(tmp_path: Path) -> None:
    for sets, expected in [
        (["model.batch_norm.eval=recalibrate"], "model.batch_norm.eval 'recalibrate' changes how BatchNorm's"),
        (["model.input_norm=dain", "features.window=1"], "needs features.window >= 2"),
        (["model.kind=lstm", "model.norm=batchrenorm", "model.norm_placement=cell"], "'layer' or 'batch'"),
        (["model.norm=batchrenorm", "model.renorm.warmup_steps=30000"], "model.renorm.d_max_steps=25000 must be"),
        (["model.input_norm=revn"], "model.input_norm: got 'revn'"),
    ]:
        args = [a for s in sets for a in ("--set", s)]
        code, _, err = _cli("train", QUICK, *args, "--out", str(tmp_path / "x"))
        assert code == 2 and expected in err and "Traceback" not in err, (sets, err)
        assert len(err.strip().splitlines()) == 1


def test_shipped_sweeps_include_the_new_options_and_every_cell_validates() -> None:
    from cryptonorm.sweeps.spec import load_sweep

    seen: dict[str, set[tuple[str, str, str]]] = {}
    for name in ("norms", "batch_size", "bn_eval"):
        sweep = load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml")  # validates every cell's config
        seen[name] = {(c.config.model.norm, c.config.model.input_norm, c.config.model.batch_norm.eval)
                      for c in sweep.cells}
    new = {("batchrenorm", "none", "running"), ("layer", "revin", "running"), ("batch", "dain", "running")}
    assert new <= seen["norms"]
    assert ("batchrenorm", "none", "running") in seen["batch_size"]
    assert {("batch", "none", "recalibrate"), ("batchrenorm", "none", "batch")} <= seen["bn_eval"]
