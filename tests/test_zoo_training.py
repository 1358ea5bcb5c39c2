"""Every model kind x norm trained on real BTC 1h, with every target kind, input norm and BatchNorm
inference mode; BatchNorm's running statistics at inference; checkpoints, exact resume, ONNX export, and
the CPU fallbacks of train.cuda_graph / bf16."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from cryptonorm.config import build_config
from cryptonorm.learn.models import build_model
from tests.conftest import small_real_config
from tests.test_zoo import NETWORKS, kind_norm_placements, tiny

torch.set_num_threads(1)


# ---------------------------------------------------------------- every kind x norm on real BTC 1h


@pytest.fixture(scope="module")
def btc() -> Any:
    """Real BTC/USDT 1h, Jan-Apr 2024, window 16: ~2,000 training windows, of which tests use a few hundred."""
    from cryptonorm.data.store import load_candles
    from cryptonorm.features import dataset, splits

    cfg = build_config(small_real_config())
    ds = splits.split(dataset.prepare(load_candles(cfg), cfg), cfg)
    ds.train_idx, ds.val_idx = ds.train_idx[-384:], ds.val_idx[:128]
    return ds


def real_cfg(kind: str, norm: str | None, **model: Any) -> Any:
    raw = small_real_config()
    raw["model"] = tiny(kind, norm, **model).model_dump()
    raw["train"] = {**raw["train"], "batch_size": 64, "epochs": 2}  # type: ignore[dict-item]
    return build_config(raw)


@pytest.mark.parametrize(("kind", "norm", "placement"), kind_norm_placements())
def test_every_kind_and_norm_trains_two_epochs_on_real_btc(btc: Any, kind: str, norm: str, placement: str) -> None:
    from cryptonorm.learn.training import fit, predict

    res = fit(btc, real_cfg(kind, norm, norm_placement=placement))
    assert len(res.history) == 2 and res.stopped == "completed"
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in res.history)
    forecasts = predict(res.model, btc, btc.test_idx[:50], "cpu")
    assert np.isfinite(forecasts).all() and forecasts.std() > 0


@pytest.mark.parametrize("input_norm", ["revin", "dain"])
@pytest.mark.parametrize("kind", ["gru", "tcn", "transformer", "patchtst", "tsmixer", "dlinear"])
def test_new_kinds_train_with_each_input_norm(btc: Any, kind: str, input_norm: str) -> None:
    from cryptonorm.learn.training import fit, predict

    res = fit(btc, real_cfg(kind, None, input_norm=input_norm))
    assert all(np.isfinite(h["val_loss"]) for h in res.history)
    assert type(res.model.input_norm).__name__ == {"revin": "RevIN", "dain": "DAIN"}[input_norm]
    if input_norm == "revin":  # the forecast is de-normalized with the window statistics of logret_1
        assert "RevIN de-normalizes the forecast" in res.message
    assert np.isfinite(predict(res.model, btc, btc.test_idx[:50], "cpu")).all()


@pytest.mark.parametrize(("kind", "target"), [("transformer", {"kind": "direction"}),
                                              ("tcn", {"kind": "volatility", "loss": "qlike"}),
                                              ("patchtst", {"kind": "volatility", "loss": "nll"}),
                                              ("tsmixer", {"kind": "return", "loss": "mse"}),
                                              ("gru", {"kind": "volatility", "vol_form": "log_var"}),
                                              ("dlinear", {"kind": "direction"})])
def test_new_kinds_train_every_target_kind_and_loss(kind: str, target: dict[str, str]) -> None:
    from cryptonorm.data.store import load_candles
    from cryptonorm.features import dataset, splits
    from cryptonorm.learn.training import fit, predict

    raw = real_cfg(kind, None).to_dict()
    raw["target"] = target
    raw["data"]["until"] = "2024-02-15"
    cfg = build_config(raw)
    ds = splits.split(dataset.prepare(load_candles(cfg), cfg), cfg)
    res = fit(ds, cfg)
    got = predict(res.model, ds, ds.test_idx, "cpu")
    assert np.isfinite(got).all()
    if target["kind"] == "direction":
        assert ((got > 0) & (got < 1)).all()
    if target["kind"] == "volatility" and target.get("vol_form", "vol") != "log_var":
        assert (got > 0).all()


# ---------------------------------------------------------------- BatchNorm variants use running statistics


def batch_norm_cases() -> list[tuple[str, str, str]]:
    return [case for case in kind_norm_placements() if case[1] in ("batch", "batchrenorm")]


@pytest.mark.parametrize(("kind", "norm", "placement"), batch_norm_cases())
def test_every_batchnorm_variant_uses_running_statistics_in_eval(kind: str, norm: str, placement: str) -> None:
    """In eval mode a window's forecast does not depend on the other windows of its batch (it would if eval
    normalized by the batch: model.batch_norm.eval batch, checked below to tell them apart)."""
    torch.manual_seed(0)
    extra = {"renorm": {"warmup_steps": 0, "r_max_steps": 1, "d_max_steps": 1}}
    outs = {}
    for bn_eval in ("running", "batch"):
        torch.manual_seed(0)
        model = build_model(tiny(kind, norm, norm_placement=placement, batch_norm={"eval": bn_eval}, **extra), 3, 16)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(5):  # a few steps, so that the running statistics move from their init
            x = torch.randn(32, 16, 3) * 2 + 1
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        model.eval()
        probe = torch.randn(2, 16, 3)
        crowd = torch.cat([probe, torch.randn(30, 16, 3) * 10 + 5])
        with torch.no_grad():
            outs[bn_eval] = (model(probe), model(crowd)[:2])
    alone, crowded = outs["running"]
    torch.testing.assert_close(alone, crowded, rtol=1e-5, atol=1e-6)
    alone, crowded = outs["batch"]
    assert not torch.allclose(alone, crowded, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("kind", "norm"), [("gru", "batch"), ("tcn", "batchrenorm"), ("transformer", "batch"),
                                            ("patchtst", "batch"), ("tsmixer", "batchrenorm")])
def test_recalibrated_batch_statistics_for_the_new_kinds(btc: Any, kind: str, norm: str) -> None:
    """model.batch_norm.eval recalibrate: after fit every batch-statistics module holds the exact statistics
    of what it sees at inference on the latest training windows (AdaBN)."""
    from cryptonorm.learn.norms import BATCH_STAT_MODULES
    from cryptonorm.learn.training import fit, gather_windows

    res = fit(btc, real_cfg(kind, norm, batch_norm={"eval": "recalibrate", "recalibrate_bars": 200}))
    assert "recalibrated on the last 200 training windows" in res.message
    windows = gather_windows(torch.as_tensor(btc.X), torch.as_tensor(np.sort(btc.train_idx)[-200:]),
                             torch.arange(-15, 1))
    mods = [m for m in res.model.modules() if isinstance(m, BATCH_STAT_MODULES)]
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(i[0].detach().double())) for m in mods]
    with torch.no_grad():
        res.model.eval()(windows)
    for h in hooks:
        h.remove()
    for mod, x in zip(mods, seen, strict=True):
        dims = (0,) if x.dim() == 2 else (0, 2)
        torch.testing.assert_close(mod.running_mean.double(), x.mean(dim=dims), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- checkpoints, exact resume, ONNX


@pytest.mark.parametrize("kind", [k for k in NETWORKS if k not in ("mlp", "lstm")])
def test_checkpoint_round_trip_and_exact_resume(kind: str, btc: Any, tmp_path: Any) -> None:
    from cryptonorm.learn.checkpoints import load_checkpoint
    from cryptonorm.learn.training import fit

    cfg = real_cfg(kind, None, dropout=0.1)
    cfg = build_config({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "epochs": 3, "patience": 10}})
    saved: dict[int, dict[str, Any]] = {}

    def keep(state: Any) -> None:
        buf = io.BytesIO()
        torch.save(state.state_dict(), buf)
        buf.seek(0)
        saved[state.epoch] = torch.load(buf, weights_only=True)

    full = fit(btc, cfg, checkpoint=tmp_path / "model.pt", on_epoch_end=keep)
    resumed = fit(btc, cfg, resume=saved[1])
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded, _ = load_checkpoint(tmp_path / "model.pt")
    x = torch.as_tensor(btc.X[: 16 * 4].reshape(4, 16, -1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), full.model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", [k for k in NETWORKS if k not in ("mlp", "lstm")])
def test_onnx_export_equals_torch(kind: str, tmp_path: Any) -> None:
    ort = pytest.importorskip("onnxruntime")
    from cryptonorm.learn.export import export_onnx

    torch.manual_seed(0)
    model = build_model(tiny(kind), 3, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):  # BatchNorm's running statistics away from their init
        opt.zero_grad()
        model(torch.randn(16, 16, 3)).pow(2).mean().backward()
        opt.step()
    model.eval()
    center, scale = [1.0, -2.0, 50.0], [0.5, 3.0, 10.0]
    path = export_onnx(model, center, scale, 5.0, 16, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(50, 40, size=(5, 16, 3)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"features": x})[0]
    z = np.nan_to_num(np.clip((x.astype(np.float64) - center) / scale, -5.0, 5.0), nan=0.0)
    with torch.no_grad():
        want = model.to_forecast(model(torch.as_tensor(z, dtype=torch.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "tcn", "transformer", "patchtst", "tsmixer", "dlinear"])
def test_cuda_graph_and_bf16_settings_fall_back_to_the_same_eager_fit_on_the_cpu(kind: str, btc: Any) -> None:
    """What runs here of train.cuda_graph and bf16: on the CPU both leave training eager and fp32 (bf16 is a
    CUDA autocast), with a note, and the history equals a plain fit's exactly. GPU runs: unmeasured here."""
    from cryptonorm.learn.training import fit

    plain = real_cfg(kind, None)
    accel = build_config({**plain.to_dict(), "train": {**plain.to_dict()["train"], "cuda_graph": True,
                                                        "precision": "bf16"}})
    a, b = fit(btc, plain), fit(btc, accel)
    assert "train.cuda_graph needs a CUDA device" in b.message
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
