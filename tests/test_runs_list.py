"""`cryptonorm runs [DIR]`: a table (and --json) of run directories, finished or not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptonorm.cli import app

runner = CliRunner()


def test_runs_lists_finished_and_unfinished_runs(small_real_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(small_real_run, root / "done")
    shutil.copytree(small_real_run, root / "sweep" / "cells" / "a" / "run")  # nested, as in a sweep
    broken = root / "broken"
    shutil.copytree(small_real_run, broken)
    (broken / "run.json").unlink()
    shutil.rmtree(broken / "backtest")
    (root / "not-a-run").mkdir()

    r = runner.invoke(app, ["runs", str(root), "--json"])
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"done", "broken", "sweep/cells/a/run"}
    metrics = json.loads((small_real_run / "metrics.json").read_text())["test"]
    bt = json.loads((small_real_run / "backtest" / "metrics.json").read_text())
    done = rows["done"]
    assert done["finished"] is True and (done["model"], done["norm"], done["target"]) == ("mlp", "layer", "return/1")
    assert done["test"]["directional_accuracy"] == pytest.approx(metrics["directional_accuracy"])
    assert done["sharpe"] == pytest.approx(bt["strategy"]["sharpe"])
    assert rows["broken"]["finished"] is False and rows["broken"]["sharpe"] is None

    r = runner.invoke(app, ["runs", str(root)])
    assert r.exit_code == 0, r.stderr
    line = {name: [ln for ln in r.stdout.splitlines() if f" {name} " in ln] for name in ("broken", "done")}
    assert line["broken"][0].rstrip(" │").endswith("no") and line["done"][0].rstrip(" │").endswith("yes")
    assert f"{bt['strategy']['sharpe']:.2f}" in line["done"][0]


def test_runs_on_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "is not a directory" in r.stderr
