"""--track mlflow / tensorboard: the real libraries write to a temp dir and what they stored is read back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.pipeline.tracking import log_runs

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_gets_params_epoch_and_final_metrics_and_artifacts(small_real_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the default store: ./mlruns.db (SQLite; MLflow 3's file store is deprecated)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert log_runs("mlflow", "exp-a", [("first", small_real_run)]) == 1
    assert log_runs("mlflow", "exp-a", [("first", small_real_run)]) == 0  # the same files are not logged twice
    assert (tmp_path / "mlruns.db").is_file()  # runs, params and metrics (./mlruns holds only artifacts)
    assert not list(tmp_path.rglob("meta.yaml"))  # no file store

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp-a")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "first" and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["model.norm"] == "layer" and run.data.params["features.window"] == "16"
    assert json.loads(run.data.params["model.hidden"]) == [16, 8]
    history = pd.read_csv(small_real_run / "history.csv")
    logged = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in logged] == history["epoch"].tolist()
    assert [m.value for m in logged] == pytest.approx(history["train_loss"].tolist())
    metrics = json.loads((small_real_run / "metrics.json").read_text())
    bt = json.loads((small_real_run / "backtest" / "metrics.json").read_text())
    assert run.data.metrics["test.mse"] == pytest.approx(metrics["test"]["mse"])
    assert run.data.metrics["bt.sharpe"] == pytest.approx(bt["strategy"]["sharpe"])
    assert run.data.metrics["bh.total_return"] == pytest.approx(bt["buy_and_hold"]["total_return"])
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    sub = {a.path for a in client.list_artifacts(run.info.run_id, "backtest")}
    assert {"config.yaml", "metrics.json"} <= top and {"backtest/equity.png", "backtest/metrics.json"} <= sub


def test_tensorboard_event_files_hold_the_same(small_real_run: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.setenv("CRYPTONORM_TENSORBOARD_DIR", str(tmp_path / "tb"))
    assert log_runs("tensorboard", "exp-b", [("first", small_real_run)]) == 1
    acc = ea.EventAccumulator(str(tmp_path / "tb" / "exp-b" / "first"), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0})
    acc.Reload()
    history = pd.read_csv(small_real_run / "history.csv")
    val = acc.Scalars("val_loss")
    assert [e.step for e in val] == history["epoch"].tolist()
    assert [e.value for e in val] == pytest.approx(history["val_loss"].tolist(), rel=1e-6)
    bt = json.loads((small_real_run / "backtest" / "metrics.json").read_text())
    assert acc.Scalars("bt.sharpe")[0].value == pytest.approx(bt["strategy"]["sharpe"], rel=1e-6)
    assert "equity" in acc.Tags()["images"]
    assert log_runs("tensorboard", "exp-b", [("first", small_real_run)]) == 0


@pytest.mark.parametrize("args", [["train", "CONFIG", "--track", "wandb"], ["run", "CONFIG", "--track", "neptune"],
                                  ["backtest", "RUN", "--track", "mlflow"]])
def test_bad_tracking_is_a_usage_error_and_nothing_is_written(args: list[str], small_real_run: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(small_real_run.rglob("*"))
    config = str(ROOT / "configs" / "quickstart.yaml")
    r = runner.invoke(app, [a.replace("CONFIG", config).replace("RUN", str(small_real_run)) for a in args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ("not a tracking backend" in r.stderr) or ("--track applies to a config" in r.stderr)
    assert list(tmp_path.iterdir()) == [] and sorted(small_real_run.rglob("*")) == before


@pytest.mark.slow  # ~14 s on a loaded 2-core machine: MLflow creates its SQLite schema (alembic migrations)
def test_the_default_mlflow_store_is_sqlite_and_the_cli_says_where_mlflow_ui_finds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23 item 10: MLFLOW_TRACKING_URI first, else sqlite:///mlruns.db, and the output names the
    `mlflow ui --backend-store-uri ...` command for it."""
    pytest.importorskip("mlflow")
    from cryptonorm.pipeline.tracking import mlflow_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri() == f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert mlflow_uri() == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    config = str(ROOT / "configs" / "quickstart.yaml")
    small = ["--set", "train.epochs=1", "--set", "model.hidden=[8]", "--set", "train.threads=1", "--set",
             "data.since=2022-01-01", "--set", "data.until=2022-02-01", "--set", f"data.dir={tmp_path / 'data'}"]
    r = runner.invoke(app, ["train", config, *small, "--out", str(tmp_path / "run"), "--track", "mlflow"])
    assert r.exit_code == 0, r.stderr
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlruns.db'}" in r.stdout + r.stderr
    assert (tmp_path / "mlruns.db").is_file()
