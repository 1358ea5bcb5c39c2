"""A volatility run end to end through the real CLI on real BTC/USDT 4h candles: metrics beside every
baseline with Diebold-Mariano, forecasts.csv columns, the vol_target backtest, and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.evaluate import vol_metrics as vm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "btc_4h_vol.yaml")
DATA = ROOT.parent / "shared" / "data" / "BTC_USDT-4h.csv.gz"
SMALL = ["--set", f"data.file={DATA}", "--set", "data.since=2023-06-01", "--set", "split.val_start=2024-09-01",
         "--set", "split.test_start=2025-03-01", "--set", "train.epochs=2", "--set", "model.hidden=[16]",
         "--set", "train.threads=1"]
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DATA.exists():
        pytest.skip(f"real data {DATA} not present")
    out = tmp_path_factory.mktemp("vol") / "run"
    r = runner.invoke(app, ["run", CONFIG, *SMALL, "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "(har)" in r.stdout and "(naive)" in r.stdout and "Trailing" in r.stdout  # both tables
    return out


def test_metrics_hold_every_vol_metric_baseline_and_dm(run_dir: Path) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    test = m["test"]
    assert set(vm.VOL_KEYS) <= set(test)
    assert "persistence" not in test  # |r_t|, the straw man, is gone
    names = {"har", "ewma", "naive"} | ({"garch"} if _has_arch() else set())
    assert names <= set(test["baselines"])
    for name in names:
        assert set(vm.VOL_KEYS) <= set(test["baselines"][name]), name
    for loss in ("qlike", "mse_var"):
        assert 0 <= test["dm_vs_har"][loss]["p"] <= 1
        assert test["dm_vs_har"][loss]["n"] == m["samples"]["test"]
    # the baselines' metrics are those of their forecasts.csv columns on exactly the model's test bars
    df = pd.read_csv(run_dir / "forecasts.csv")
    t = df[(df["split"] == "test") & df["forecast"].notna()]
    assert len(t) == m["samples"]["test"]
    assert (t["forecast_var"] > 0).all()
    for name in names:
        again = vm.vol_metrics(t[f"baseline_{name}"].to_numpy(), t["y_var"].to_numpy())
        assert again["qlike"] == pytest.approx(test["baselines"][name]["qlike"], rel=1e-6)
        assert again["mse_var"] == pytest.approx(test["baselines"][name]["mse_var"], rel=1e-6)
    model = vm.vol_metrics(t["forecast_var"].to_numpy(), t["y_var"].to_numpy())
    assert model["qlike"] == pytest.approx(test["qlike"], rel=1e-6)
    # log_var form: the label column is the log of the variance column
    np.testing.assert_allclose(np.exp(t["y"].to_numpy()), t["y_var"].to_numpy(), rtol=1e-5)


def test_backtest_is_vol_target_beside_trailing_vol_and_buy_and_hold(run_dir: Path) -> None:
    bt = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    assert bt["mode"] == "vol_target" and bt["target_vol"] == 0.4
    for part in (bt["strategy"], bt["baselines"]["trailing_vol"], bt["buy_and_hold"]):
        assert {"sharpe", "risk_tracking_error", "vol_ratio"} <= set(part)
    eq = pd.read_csv(run_dir / "backtest" / "equity.csv")
    assert (eq["position"] >= 0).all() and (eq["position"] <= 1.5 + 1e-12).all()


def test_a_direction_backtest_of_a_volatility_target_is_a_config_error() -> None:
    r = runner.invoke(app, ["config", "validate", CONFIG, "--set", "backtest.mode=direction"])
    assert r.exit_code == 2
    assert "use backtest.mode 'vol_target'" in r.stderr and "Traceback" not in r.stderr
    r = runner.invoke(app, ["config", "validate", CONFIG, "--set", "target.kind=return"])
    assert r.exit_code == 0, r.stderr  # loss and backtest.mode 'auto' resolve per kind
    r = runner.invoke(app, ["config", "validate", CONFIG, "--set", "target.kind=return", "--set", "target.loss=qlike"])
    assert r.exit_code == 2 and "needs target.kind 'volatility'" in r.stderr


def _has_arch() -> bool:
    try:
        import arch  # noqa: F401
    except ImportError:
        return False
    return True
