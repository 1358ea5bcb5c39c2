"""The variance floor (issue 23): no volatility forecast below the VOL_FLOOR_QUANTILE quantile of the training
labels' variance, counted in metrics.json, applied by `predict` too; a DAIN seed that collapsed keeps a finite,
moderate test QLIKE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.features import realized
from tests.cli_run import cli

ROOT = Path(__file__).resolve().parents[1]
BTC_4H = ROOT.parent / "shared" / "data" / "BTC_USDT-4h.csv.gz"
runner = CliRunner()




def test_variance_floor_is_a_quantile_of_the_positive_training_variances() -> None:
    rng = np.random.default_rng(0)
    v = rng.lognormal(-9, 1, 5000)
    floor = realized.variance_floor(np.r_[v, 0.0, np.nan, -1.0])  # zero, NaN and negative labels do not count
    assert floor is not None
    srt = np.sort(v)  # the 0.1% quantile of 5000 values sits at rank 4999 x 0.001 = 4.999: the 5th..6th
    assert srt[4] < floor < srt[5]
    assert realized.variance_floor(np.array([np.nan, 0.0])) is None


@pytest.mark.parametrize("form", realized.FORMS)
def test_floor_raises_exactly_the_forecasts_below_it_in_every_form(form: str) -> None:
    var = np.array([1e-17, 1e-7, 2e-6, 5e-5, np.nan, 3e-4])
    x = realized.to_form(var, form)  # what the network predicts
    floored, hit = realized.floor_forecasts(x, 1e-6, form)
    assert hit.tolist() == [True, True, False, False, False, False]
    back = realized.from_form(floored, form)
    np.testing.assert_allclose(back[:2], 1e-6, rtol=1e-12)
    assert np.array_equal(floored[2:], x[2:], equal_nan=True)  # the rest untouched, NaN kept
    same, none = realized.floor_forecasts(x, None, form)
    assert np.array_equal(same, x, equal_nan=True) and not none.any()


def _config(tmp: Path) -> Path:
    """Claim 5's real-volatility setup (configs/studies/base/real_4h_vol.yaml) with DAIN, on BTC 4h: seed 2
    forecast a variance of 6e-18 on one 2022-25 test bar (test QLIKE 4.5e9) before the floor."""
    cfg = {
        "name": "dain-collapse", "seed": 2,
        "data": {"file": str(BTC_4H), "symbol": "BTC/USDT", "timeframe": "4h", "since": "2019-01-01",
                 "until": "2025-12-01"},
        "features": {"window": 24, "returns": [1, 2, 6, 12, 42], "volatility": [6, 42], "volume_z": [42]},
        "target": {"kind": "volatility", "horizon": 6},
        "split": {"val_start": "2021-07-01", "test_start": "2022-01-01"},
        "model": {"kind": "mlp", "norm": "none", "hidden": [32, 32], "dropout": 0.0, "input_norm": "dain"},
        "train": {"epochs": 8, "batch_size": 128, "lr": 0.001, "device": "cpu", "threads": 1},
        "backtest": {"fee_bps": 10},
    }
    path = tmp / "dain.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.mark.slow
def test_a_collapsed_dain_seed_keeps_a_finite_qlike_and_the_floor_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    code, _, err = cli("train", str(_config(tmp_path)), "--out", str(run))
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    floor = metrics["vol_floor"]["variance"]
    assert metrics["vol_floor"]["quantile"] == realized.VOL_FLOOR_QUANTILE
    test = metrics["test"]
    assert np.isfinite(test["qlike"]) and test["qlike"] < 2.0  # HAR's is ~0.7 here; 4.5e9 without the floor
    assert test["vol_floor_hits"] == metrics["vol_floor"]["hits"]["test"] >= 1
    assert "fell below the floor" in metrics["message"]
    f = pd.read_csv(run / "forecasts.csv")
    assert f["forecast_var"].min() >= floor * (1 - 1e-12)
    # predict applies the run's floor too; without it (the same path, floor removed) the collapse is there
    code, _, err = cli("predict", str(run), "-o", str(tmp_path / "pred.csv"))
    assert code == 0, err
    floored = pd.read_csv(tmp_path / "pred.csv")["forecast"].to_numpy()
    monkeypatch.setattr(realized, "floor_forecasts", lambda x, fl, form: (np.asarray(x), np.zeros(len(x), bool)))
    code, _, err = cli("predict", str(run), "-o", str(tmp_path / "raw.csv"))
    assert code == 0, err
    raw = pd.read_csv(tmp_path / "raw.csv")["forecast"].to_numpy()
    raw_var = realized.from_form(raw, "vol")
    below = np.isfinite(raw_var) & (raw_var < floor)
    assert raw_var[below].min() < 1e-6 * floor  # the collapse this test is about
    assert np.array_equal(floored[~below], raw[~below], equal_nan=True)
    np.testing.assert_allclose(realized.from_form(floored[below], "vol"), floor, rtol=1e-12)
