"""Re-backtests of saved forecasts (`backtest RUN_DIR --set/--grid`): no retraining, never over the original,
grids chosen on the validation split only, the test split reported once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.pipeline import rebacktest

runner = CliRunner()


def _tree(p: Path) -> dict[str, bytes]:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


@pytest.fixture
def run(small_real_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared real run (these tests write into it)."""
    return Path(shutil.copytree(small_real_run, tmp_path / "run"))


def test_set_writes_a_new_folder_and_never_touches_the_original(run: Path) -> None:
    before = _tree(run)
    r = runner.invoke(app, ["backtest", str(run), "--set", "backtest.fee_bps=5", "--json"])
    assert r.exit_code == 0, r.stderr
    new = [p for p in run.iterdir() if p.name.startswith("backtest-")]
    assert len(new) == 1 and {f.name for f in new[0].iterdir()} >= {"equity.csv", "trades.csv", "metrics.json",
                                                                     "equity.png", "backtest.yaml"}
    assert _tree(run).items() >= before.items()  # every original file byte for byte, only additions
    m = json.loads((new[0] / "metrics.json").read_text())
    assert m["costs"]["fee_bps"] == 5 and json.loads(r.stdout)["costs"]["fee_bps"] == 5
    # the cost charged is |position change| x 5 bps: recomputed from the equity frame itself
    eq = pd.read_csv(new[0] / "equity.csv")
    turn = np.abs(np.diff(eq["position"].to_numpy(), prepend=0.0))
    np.testing.assert_allclose(eq["cost"].to_numpy(), turn * 5e-4, atol=1e-15)


def test_same_settings_reproduce_the_run_and_zero_fee_is_before_costs(run: Path) -> None:
    original = json.loads((run / "backtest" / "metrics.json").read_text())
    _, same = rebacktest.rebacktest(run, {"fee_bps": 10}, write=False)
    assert same.metrics["strategy"] == pytest.approx(original["strategy"], nan_ok=True)
    _, free = rebacktest.rebacktest(run, {"backtest.fee_bps": 0}, write=False)
    for k in ("total_return", "sharpe", "trades"):
        assert free.metrics["strategy"][k] == pytest.approx(original["strategy_before_costs"][k])


def test_grid_chooses_on_validation_and_reports_the_test_split_once(run: Path) -> None:
    r = runner.invoke(app, ["backtest", str(run), "--grid", "backtest.threshold=[0, 0.0005, 0.002]",
                            "--grid", "backtest.fee_bps=[2, 10]"])
    assert r.exit_code == 0, r.stderr
    assert "validation split only" in r.stdout and "backtested once" in r.stdout
    out = Path(r.stdout.strip().splitlines()[-1])
    assert out.parent == run and out.name.startswith("backtest-grid-")
    table, sel = pd.read_csv(out / "grid.csv"), pd.read_csv(out / "selected.csv")
    assert len(table) == 6 and len(sel) == 2 and (out / "heatmap.png").stat().st_size > 1000
    for fee in (2, 10):
        # independent of the grid code: one plain re-backtest of the validation split per threshold
        val = {t: rebacktest.rebacktest(run, {"threshold": t, "fee_bps": fee}, split="val",
                                        write=False)[1].metrics["strategy"]["sharpe"] for t in (0, 0.0005, 0.002)}
        best = max(val, key=lambda t: val[t])
        row = sel[sel["fee_bps"] == fee].iloc[0]
        assert row["threshold"] == best and row["val_sharpe"] == pytest.approx(val[best])
        test = rebacktest.rebacktest(run, {"threshold": best, "fee_bps": fee}, write=False)[1].metrics
        assert row["test_sharpe"] == pytest.approx(test["strategy"]["sharpe"])
        chosen = table[(table["fee_bps"] == fee) & table["chosen"]]
        assert chosen["threshold"].tolist() == [best]
    assert "test_sharpe" not in table.columns  # the test split is never shown per grid cell


@pytest.mark.parametrize(("args", "needle"), [
    (["--grid", "model.norm=[batch, layer]"], "only be re-backtested with backtest.* keys"),
    (["--grid", "seed=[1, 2]"], "backtest.* keys"),
    (["--grid", "backtest.walk_forward.step=[24]"], "changes the training"),
    (["--grid", "backtest.fee_bps=[-1, 2]"], "backtest.fee_bps"),
    (["--set", "train.epochs=3"], "backtest.* keys"),
    (["--set", "backtest.fee_bps=5", "--out", "RUN/backtest"], "the run's own results"),
])
def test_bad_grid_or_set_is_a_usage_error_and_writes_nothing(run: Path, args: list[str], needle: str) -> None:
    before = _tree(run)
    r = runner.invoke(app, ["backtest", str(run), *(a.replace("RUN", str(run)) for a in args)])
    assert r.exit_code == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _tree(run) == before


def test_grid_on_a_walk_forward_run_is_refused(run: Path) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["split"]["walk_forward"]["enabled"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["backtest", str(run), "--grid", "backtest.threshold=[0, 0.001]"])
    assert r.exit_code == 2 and "walk-forward" in r.stderr


def test_a_sweep_rerun_with_new_backtest_settings_only_rebacktests(tmp_path: Path, real_config: Any) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(real_config(**{"data.until": "2024-02-15"})))
    (tmp_path / "sweep.yaml").write_text("name: rb\nbase: base.yaml\nset: {train.epochs: 1}\ngrid: {seed: [0]}\n")
    sweep_dir = tmp_path / "sw"
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "-o", str(sweep_dir)])
    assert r.exit_code == 0, r.stderr
    (cell,) = (sweep_dir / "cells").iterdir()
    trained = {n: (cell / "run" / n).stat().st_mtime_ns for n in ("model.pt", "history.csv", "forecasts.csv")}
    before = json.loads((cell / "result.json").read_text())
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "-o", str(sweep_dir), "--set",
                            "backtest.fee_bps=2"])
    assert r.exit_code == 0, r.stderr
    assert "0 cell(s) run, 1 finished earlier (1 re-backtested" in r.stdout
    assert list((sweep_dir / "cells").iterdir()) == [cell]  # the same cell id: training is identified without costs
    assert {n: (cell / "run" / n).stat().st_mtime_ns for n in trained} == trained  # not retrained
    after = json.loads((cell / "result.json").read_text())
    want = rebacktest.rebacktest(cell / "run", {"fee_bps": 2}, write=False)[1].metrics["strategy"]
    assert after["backtest"]["strategy"]["sharpe"] == pytest.approx(want["sharpe"])
    assert after["backtest"]["strategy"]["sharpe"] > before["backtest"]["strategy"]["sharpe"]  # cheaper trades
    assert json.loads((cell / "run" / "backtest" / "metrics.json").read_text())["costs"]["fee_bps"] == 2
    row = pd.read_csv(sweep_dir / "sweep_results.csv").iloc[0]
    assert row["bt_sharpe"] == pytest.approx(want["sharpe"])
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "-o", str(sweep_dir), "--set",
                            "backtest.fee_bps=2"])
    assert "re-backtested" not in r.stdout  # nothing changed: nothing to do
