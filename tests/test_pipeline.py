"""End to end through the real CLI on the offline market: files, reproducibility, and honesty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.cli_run import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
runner = CliRunner()
SMALL = ["--set", "train.epochs=3", "--set", "model.hidden=[32, 16]", "--set", "train.threads=1"]




@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def run_dir(workdir: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        code, out, err = cli("run", QUICK, *SMALL)
    assert code == 0, err
    runs = sorted((workdir / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_run_writes_a_complete_self_describing_run(run_dir: Path) -> None:
    for name in ("config.yaml", "model.pt", "scaler.json", "history.csv", "metrics.json", "run.json",
                 "forecasts.csv", "backtest/equity.csv", "backtest/trades.csv", "backtest/metrics.json",
                 "backtest/equity.png"):
        assert (run_dir / name).stat().st_size > 0, name
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns)[:6] == ["epoch", "train_loss", "val_loss", "lr", "seconds", "samples_per_s"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["seed"] == 0 and info["device"] == "cpu" and len(info["data"]["hash"]) == 16
    assert {"torch", "pandas", "numpy", "cryptonorm"} <= set(info["versions"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert {"mse", "mae", "directional_accuracy", "ic_pearson", "ic_spearman", "persistence"} <= set(metrics[split])
    bt = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    assert bt["costs"]["fee_bps"] == 10


def test_forecasts_are_out_of_sample_and_ordered(run_dir: Path) -> None:
    f = pd.read_csv(run_dir / "forecasts.csv")
    assert f["timestamp"].is_monotonic_increasing
    val, test = f[f["split"] == "val"], f[f["split"] == "test"]
    assert len(val) and len(test) and val["timestamp"].max() < test["timestamp"].min()
    assert "train" not in set(f["split"])  # only out-of-sample bars reach the backtest


def test_predict_from_checkpoint_reproduces_the_run(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    code, _, err = cli("predict", str(run_dir), "-o", str(out))
    assert code == 0, err
    pred = pd.read_csv(out).set_index("timestamp")["forecast"]
    f = pd.read_csv(run_dir / "forecasts.csv").set_index("timestamp")
    test = f[(f["split"] == "test") & f["forecast"].notna()]
    np.testing.assert_allclose(pred.loc[test.index].to_numpy(), test["forecast"].to_numpy(), rtol=1e-5, atol=1e-9)
    assert np.isfinite(pred.iloc[-1])  # the latest bar gets a forecast although its outcome is in the future


def test_predict_on_another_file_uses_all_of_it(run_dir: Path, tmp_path: Path) -> None:
    src = ROOT.parent / "shared" / "data" / "ETH_USDT-1h.csv.gz"
    out = tmp_path / "eth.csv"
    code, _, err = cli("predict", str(run_dir), "--data", str(src), "-o", str(out))
    assert code == 0, err
    pred = pd.read_csv(out)
    assert len(pred) == 72_569  # the whole file, not the run's own date range
    assert pred["forecast"].notna().sum() > 70_000
    code, _, err = cli("predict", str(run_dir), "--data", str(src).replace("1h", "4h"))
    assert code == 1 and "does data.timeframe (1h) match the candles?" in err


def test_backtest_again_from_run_dir_is_identical(run_dir: Path) -> None:
    before = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    code, out, err = cli("backtest", str(run_dir), "--json")
    assert code == 0, err
    assert json.loads(out)["strategy"] == before["strategy"]


def test_same_seed_same_result(workdir: Path, run_dir: Path, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        code, out, err = cli("train", QUICK, *SMALL, "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    a = pd.read_csv(run_dir / "history.csv")
    b = pd.read_csv(tmp_path / "again" / "history.csv")
    pd.testing.assert_series_equal(a["train_loss"], b["train_loss"])
    pd.testing.assert_series_equal(a["val_loss"], b["val_loss"])


def _test_metrics(workdir: Path, out: Path, signal: float, seed: int) -> dict[str, float]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        code, stdout, err = cli("run", QUICK, "--json", "--out", str(out), "--set", "train.threads=1",
                                "--set", f"data.synthetic.signal={signal}", "--set", f"data.synthetic.seed={seed}",
                                "--set", "data.since=2021-01-01", "--set", "data.until=2023-07-01",
                                "--set", "train.epochs=6")
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text())["test"]  # type: ignore[no-any-return]


def test_planted_signal_is_found_and_absent_signal_is_not(workdir: Path, tmp_path: Path) -> None:
    # signal 0.3: at 0.2 one realization's test slice is too short to find it at 3 standard errors every time
    # (the bit-stable market of issue 23 item 11, seed 11: 0.524 vs 0.526 needed; seeds 12, 13: 0.526, 0.547)
    found = _test_metrics(workdir, tmp_path / "s", 0.3, seed=11)
    se = 0.5 / np.sqrt(found["n"])
    assert found["directional_accuracy"] > 0.5 + 3 * se
    assert found["directional_accuracy"] > found["persistence"]["directional_accuracy"]
    null = _test_metrics(workdir, tmp_path / "n", 0.0, seed=11)
    assert abs(null["directional_accuracy"] - 0.5) < 3 * 0.5 / np.sqrt(null["n"])


def test_walk_forward_forecasts_cover_the_tail_out_of_sample(workdir: Path, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        code, _, err = cli("train", QUICK, *SMALL, "--out", str(tmp_path / "wf"), "--set", "train.epochs=1",
                           "--set", "split.walk_forward.enabled=true", "--set", "split.walk_forward.step=2000",
                           "--set", "split.walk_forward.train_bars=4000")
    assert code == 0, err
    folds = pd.read_csv(tmp_path / "wf" / "folds.csv")
    assert len(folds) >= 3
    assert (folds["train_end"] < folds["test_start"]).all()
    assert (folds["test_start"].iloc[1:].to_numpy() > folds["test_end"].iloc[:-1].to_numpy()).all()
    code, out, err = cli("backtest", str(tmp_path / "wf"), "--json")
    assert code == 0, err
    assert json.loads(out)["bars"] > 5000, out


def test_features_and_audit_commands(workdir: Path, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for name in ("f.parquet", "f.csv"):
            code, _, err = cli("features", QUICK, "-o", str(tmp_path / name))
            assert code == 0, err
        code, out, err = cli("audit", QUICK)
    assert code == 0, err + out
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert {"timestamp", "close", "rsi_14", "macd_12_26_9", "bb_pctb_20_2", "atr_14"} <= set(table.columns)
    assert len(pd.read_csv(tmp_path / "f.csv")) == len(table)


def test_bad_run_dir_and_too_short_data(workdir: Path, tmp_path: Path) -> None:
    code, _, err = cli("backtest", str(tmp_path))
    assert code == 2 and "config" in err.lower()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        code, _, err = cli("train", QUICK, "--set", "data.until=2022-01-02", "--out", str(tmp_path / "short"))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
