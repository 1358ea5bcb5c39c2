"""The notebook API (`import cryptonorm as cn`): the CLI's code path as Python values, the project's
exceptions instead of exits, UTC-indexed frames; and the example notebook, executed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import cryptonorm as cn
from cryptonorm.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


def test_import_stays_light_and_the_api_loads_on_first_use() -> None:
    code = ("import sys, cryptonorm as cn; heavy = [m for m in ('torch', 'pandas', 'ccxt') if m in sys.modules]; "
            "f = cn.load_config; print(heavy, callable(f), 'cryptonorm.api' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "True", "True"]


def test_load_config_applies_overrides_and_raises_project_errors(tmp_path: Path) -> None:
    cfg = cn.load_config(ROOT / "configs" / "quickstart.yaml", overrides={"model.norm": "batch", "train.epochs": 2})
    assert (cfg.model.norm, cfg.train.epochs, cfg.name) == ("batch", 2, "quickstart")
    with pytest.raises(ConfigError, match="model.norm"):
        cn.load_config(None, {"model.norm": "lyer"})
    with pytest.raises(ConfigError, match="not found"):
        cn.load_config(tmp_path / "nope.yaml")


def test_run_forecasts_history_and_backtest_frames(small_real_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(small_real_run, tmp_path / "run"))
    run = cn.load_run(run_dir)
    f = run.forecasts
    assert isinstance(f.index, pd.DatetimeIndex) and str(f.index.tz) == "UTC"
    assert (f.index == pd.to_datetime(f["timestamp"], unit="ms", utc=True)).all()
    assert f.index.is_monotonic_increasing and set(f["split"].dropna()) == {"val", "test"}
    assert run.history.index.name == "epoch" and len(run.history) == 2
    assert run.metrics["test"]["n"] > 0

    bt = cn.backtest(run)  # no settings: the CLI's `backtest RUN_DIR`, same files, same numbers
    saved = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    assert bt.path == run_dir / "backtest" and bt.stats["sharpe"] == pytest.approx(saved["strategy"]["sharpe"])
    assert isinstance(bt.stats, pd.Series) and bt.stats["fee_bps"] == 10
    assert str(bt.equity.index.tz) == "UTC" and len(bt.equity) == (f["split"] == "test").sum()
    assert str(bt.trades.index.tz) == "UTC" and len(bt.trades) == bt.stats["trades"]
    assert (bt.trades.index == pd.to_datetime(bt.trades["entry_time"], unit="ms", utc=True)).all()

    cheap = cn.backtest(run, fee_bps=5, write=False)
    assert cheap.path is None and cheap.stats["fee_bps"] == 5 and cheap.stats["sharpe"] > bt.stats["sharpe"]
    assert cheap.stats["before_costs_sharpe"] == pytest.approx(bt.stats["before_costs_sharpe"])
    written = cn.backtest(run_dir, fee_bps=5)
    assert written.path is not None and written.path.name.startswith("backtest-")
    assert written.stats["sharpe"] == pytest.approx(cheap.stats["sharpe"])
    with pytest.raises(ConfigError, match="backtest.fee_bps"):
        cn.backtest(run, fee_bps=-1)
    with pytest.raises(ConfigError, match="unknown backtest key"):
        cn.backtest(run, norm="batch")


def test_load_run_of_an_unfinished_run_raises(small_real_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(small_real_run, tmp_path / "run"))
    (run_dir / "run.json").unlink()
    with pytest.raises(DataError, match="unfinished"):
        cn.load_run(run_dir)
    with pytest.raises(ConfigError, match="not a run directory"):
        cn.load_run(tmp_path)


TINY_SWEEP = """\
name: api-tiny
base: base.yaml
set: {train.epochs: 1}
grid:
  model.norm: [none, layer]
"""


def test_sweep_returns_the_results_table_and_tracks_one_run_per_cell(tmp_path: Path, real_config: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # a file store, allowed explicitly (MLflow 3)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    base = real_config(**{"data.until": "2024-02-15"})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(TINY_SWEEP)
    df = cn.sweep(tmp_path / "sweep.yaml", out=tmp_path / "sw", track="mlflow")
    assert list(df["model.norm"]) == ["none", "layer"] and (df["status"] == "ok").all()
    on_disk = pd.read_csv(tmp_path / "sw" / "sweep_results.csv")
    assert on_disk["cell_id"].tolist() == df["cell_id"].tolist()
    assert on_disk["test_mse"].to_numpy() == pytest.approx(df["test_mse"].to_numpy())
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep-api-tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(df["cell_id"])
    by_cell = {r.info.run_name: r for r in runs}
    for _, row in df.iterrows():
        assert by_cell[row["cell_id"]].data.params["model.norm"] == row["model.norm"]
        assert by_cell[row["cell_id"]].data.metrics["test.mse"] == pytest.approx(row["test_mse"])


def test_example_notebook_runs(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "quickstart.yaml", tmp_path / "configs")
    nb = nbformat.read(ROOT / "examples" / "notebook_api.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            ).execute(env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = "\n".join(str(o.get("text", o.get("data", {}).get("text/plain", "")))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "sharpe" in text and "Traceback" not in text
    assert (tmp_path / "runs" / "notebook").is_dir() and list((tmp_path / "runs" / "notebook").glob("backtest-*"))
