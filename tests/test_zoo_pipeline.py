"""The new model kinds everywhere an MLP goes: `cryptonorm run` with walk-forward and the HTML report,
`predict`, `export --onnx` (onnxruntime = the run's forecasts), the notebook API, and a sweep over kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import cryptonorm as cn
from tests.cli_run import cli
from tests.conftest import small_real_config

SMALL_MODELS: dict[str, dict[str, Any]] = {
    "tcn": {"kind": "tcn", "hidden": [8, 8, 8]},
    "patchtst": {"kind": "patchtst", "patchtst": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16}},
    "transformer": {"kind": "transformer", "norm": "batch", "norm_position": "post",
                    "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16}},
}


def write_config(tmp_path: Path, model: dict[str, Any], **sections: Any) -> Path:
    raw: dict[str, Any] = small_real_config()
    raw["model"] = {"dropout": 0.0, **model}
    raw["backtest"] = {**raw["backtest"], "walk_forward": {"enabled": True, "step": 720, "train_bars": 1200}}
    raw.update(sections)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SMALL_MODELS))
def test_new_kind_runs_walk_forward_reports_predicts_and_exports(kind: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    code, out, err = cli("run", str(write_config(tmp_path, SMALL_MODELS[kind])), "--out", str(run), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert np.isfinite(doc["backtest"]["strategy"]["sharpe"]) and doc["stopped"] in ("completed", "early_stop")
    html = list(Path(doc["backtest_dir"]).glob("*.html"))
    assert html and html[0].stat().st_size > 10_000
    assert len(pd.read_csv(run / "folds.csv")) >= 2  # walk-forward refits
    f = pd.read_csv(run / "forecasts.csv")
    assert f["forecast"].notna().sum() > 500 and np.isfinite(f["forecast"].dropna()).all()

    code, _, err = cli("predict", str(run), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    again = pd.read_csv(tmp_path / "p.csv").dropna(subset=["forecast"])
    assert len(again) > 500 and np.isfinite(again["forecast"]).all()

    onnx = tmp_path / "m.onnx"
    code, _, err = cli("export", str(run), "--onnx", str(onnx))
    assert code == 0, err
    sess = ort.InferenceSession(str(onnx))
    assert sess.get_inputs()[0].shape[1:] == [16, len(json.loads((run / "scaler.json").read_text())["features"])]


@pytest.mark.slow
def test_api_trains_a_new_kind_and_a_sweep_runs_over_kinds(tmp_path: Path) -> None:
    """The notebook API and a sweep whose grid is model.kind: each kind takes its own default norm."""
    base = small_real_config(**{"data.until": "2024-02-15"})
    base["model"] = {"hidden": [8], "dropout": 0.0, "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 8},
                     "patchtst": {"d_model": 8, "heads": 2, "layers": 1, "ff": 8},
                     "tsmixer": {"blocks": 1, "ff": 8}, "tcn": {"dilations": [16]}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    run = cn.train(cn.load_config(tmp_path / "base.yaml", {"model.kind": "gru"}), out=tmp_path / "gru")
    assert run.finished and np.isfinite(run.forecasts["forecast"].dropna()).all()
    assert run.config.model.kind == "gru" and run.config.model.norm == "layer"
    (tmp_path / "sweep.yaml").write_text(
        "name: kinds\nbase: base.yaml\nset: {train.epochs: 1}\nseeds: 1\n"
        "grid:\n  model.kind: [tcn, transformer, patchtst, tsmixer, dlinear]\n")
    df = cn.sweep(tmp_path / "sweep.yaml", out=tmp_path / "sw")
    assert list(df["model.kind"]) == ["tcn", "transformer", "patchtst", "tsmixer", "dlinear"]
    assert (df["status"] == "ok").all(), df["error"].tolist()
    norms = [json.loads((Path(r) / "run.json").read_text()) and yaml.safe_load((Path(r) / "config.yaml").read_text())
             ["model"]["norm"] for r in df["run_dir"]]
    assert norms == ["weight", "layer", "batch", "batch", "none"]
    assert df["test_mse"].gt(0).all()
