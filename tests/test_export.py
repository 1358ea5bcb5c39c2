"""`cryptonorm export RUN --onnx`: onnxruntime on raw real feature windows gives torch's forecasts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import ModelConfig
from cryptonorm.learn.export import ScaledForecaster, export_onnx
from cryptonorm.learn.models import build_model

ort = pytest.importorskip("onnxruntime")
runner = CliRunner()


def _raw_windows(run_dir: Path, timestamps: np.ndarray) -> np.ndarray:
    """(n, W, F) float32 raw (unscaled) feature windows ending at `timestamps`, recomputed from the candles."""
    from cryptonorm.data.store import load_candles
    from cryptonorm.features import dataset
    from cryptonorm.pipeline import load_run_config

    cfg = load_run_config(run_dir)
    prep = dataset.prepare(load_candles(cfg), cfg)
    meta = json.loads((run_dir / "scaler.json").read_text())
    assert prep.feature_names == meta["features"]
    rows = np.searchsorted(prep.timestamps, timestamps)
    assert (prep.timestamps[rows] == timestamps).all()
    offsets = np.arange(-prep.window + 1, 1)
    return prep.features[rows[:, None] + offsets].astype(np.float32)  # (n, W, F)


def test_onnx_equals_the_runs_torch_forecasts_on_real_windows(small_real_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    r = runner.invoke(app, ["export", str(small_real_run), "--onnx", str(out)])
    assert r.exit_code == 0, r.stderr
    f = pd.read_csv(small_real_run / "forecasts.csv")
    f = f[f["forecast"].notna()]
    x = _raw_windows(small_real_run, f["timestamp"].to_numpy("int64"))
    sess = ort.InferenceSession(str(out))
    assert [i.name for i in sess.get_inputs()] == ["features"]
    got = sess.run(None, {"features": x})[0]
    assert got.shape == (len(f),) and len(f) > 500
    # the run's forecasts: torch, on inputs scaled in float64 by the pipeline; the graph scales float32 inputs
    np.testing.assert_allclose(got, f["forecast"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(got - f["forecast"].to_numpy()).max() < 1e-6  # far inside: forecasts are ~1e-3 log returns
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert json.loads(meta["features"]) == json.loads((small_real_run / "scaler.json").read_text())["features"]
    assert meta["window"] == "16" and meta["target"] == "return"


@pytest.mark.parametrize("kw", [{"kind": "lstm", "norm": "layer", "norm_placement": "cell"},
                                {"kind": "mlp", "norm": "rms"}])  # rms: torch.export-based fallback
def test_other_architectures_export_with_the_scaler_folded_in(kw: dict[str, str], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[8], **kw), 3, 6).eval()
    model.y_mean.fill_(0.01)
    model.y_std.fill_(0.02)
    center, scale = [1.0, -2.0, 50.0], [0.5, 3.0, 10.0]
    path = export_onnx(model, center, scale, 5.0, 6, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(50, 40, size=(5, 6, 3)).astype(np.float32)
    x[0, 0, 0] = np.nan  # warm-up NaN: 0 after scaling, as in the pipeline
    got = ort.InferenceSession(str(path)).run(None, {"features": x})[0]
    # independent of the wrapper: the scaler in numpy float64, then the bare model
    z = np.nan_to_num(np.clip((x.astype(np.float64) - center) / scale, -5.0, 5.0), nan=0.0)
    with torch.no_grad():
        want = model.to_forecast(model(torch.as_tensor(z, dtype=torch.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        wrapped = ScaledForecaster(model, center, scale, 5.0)(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(wrapped, want, rtol=1e-5, atol=1e-6)


def test_export_refuses_unfinished_runs_and_bad_paths(small_real_run: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(small_real_run, unfinished)
    (unfinished / "run.json").unlink()
    out = tmp_path / "m.onnx"
    for args, needle in [([str(unfinished), "--onnx", str(out)], "unfinished run"),
                         ([str(tmp_path), "--onnx", str(out)], "not a run directory"),
                         ([str(small_real_run), "--onnx", str(tmp_path / "m.txt")], "ending in .onnx")]:
        r = runner.invoke(app, ["export", *args])
        assert r.exit_code == 2 and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]  # nothing written
