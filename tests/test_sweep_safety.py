"""The sweep side of issue 24: a sweep never writes over a folder of the user's own files, `report` never
replaces the results table with a worse one when cells are damaged, and a worker's one-off warm-up is not
counted in its first cell's train_seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep import _fake_sweep, cli, write_sweep

ONE_CELL = """\
name: tiny
base: base.yaml
set: {train.epochs: 1}
grid:
  seed: [0]
"""


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("candles")  # the synthetic market, generated once for the module


def test_sweep_refuses_a_folder_of_other_files_without_force(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, tmp_path / "candles", ONE_CELL)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes\n")
    (mine / "sweep_results.csv").write_text("my,table\n")
    code, out, err = cli("sweep", str(path), "--out", str(mine), "--format", "png")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a sweep directory" in lines[0] and "--force" in lines[0], err
    assert "Error" not in err and "Traceback" not in err
    assert (mine / "summary.md").read_text() == "my notes\n"  # nothing of the user's was touched
    assert (mine / "sweep_results.csv").read_text() == "my,table\n"
    assert sorted(p.name for p in mine.iterdir()) == ["summary.md", "sweep_results.csv"]
    # a file where the folder should be: the same kind of line
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("sweep", str(path), "--out", str(tmp_path / "afile"))
    assert code == 1 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_sweep_writes_into_a_new_empty_or_forced_folder(tmp_path: Path) -> None:
    from cryptonorm.errors import UsageError
    from cryptonorm.sweeps.results import SWEEP_FILE
    from cryptonorm.sweeps.run import LOCK_FILE, check_sweep_dir

    check_sweep_dir(tmp_path / "new")  # does not exist yet: fine
    (tmp_path / "empty").mkdir()
    check_sweep_dir(tmp_path / "empty")
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / LOCK_FILE).write_text("")  # a sweep that stopped before sweep.json: ours
    check_sweep_dir(tmp_path / "crashed")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / SWEEP_FILE).write_text("{}")
    (tmp_path / "ours" / "summary.md").write_text("x")
    check_sweep_dir(tmp_path / "ours")  # a sweep directory: resumed, its report rewritten
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("x")
    try:
        check_sweep_dir(tmp_path / "theirs")
    except UsageError as e:
        assert "notes.txt" in str(e)
    else:
        raise AssertionError("a folder of other files was accepted")
    check_sweep_dir(tmp_path / "theirs", force=True)


@pytest.mark.slow  # trains one cell (~10 s on a loaded machine)
def test_forced_sweep_into_a_folder_of_other_files_runs(tmp_path: Path, candles: Path) -> None:
    path = write_sweep(tmp_path, candles, ONE_CELL)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept\n")
    code, _, err = cli("sweep", str(path), "--out", str(mine), "--format", "png", "--force")
    assert code == 0, err
    assert (mine / "sweep.json").exists() and (mine / "notes.txt").read_text() == "kept\n"
    code, _, err = cli("sweep", str(path), "--out", str(mine), "--format", "png")  # now a sweep directory
    assert code == 0, err


def test_report_on_damaged_cells_says_which_and_keeps_the_results_table(tmp_path: Path) -> None:
    root = _fake_sweep(tmp_path / "fake")
    code, _, err = cli("report", str(root), "--format", "png")
    assert code == 0, err
    table = (root / "sweep_results.csv").read_bytes()
    summary = (root / "summary.md").read_bytes()
    meta = json.loads((root / "sweep.json").read_text())
    cut, empty = meta["cells"][0]["id"], meta["cells"][1]["id"]
    (root / "cells" / cut / "result.json").write_text('{"cell_id": "x", "sta')  # cut short
    (root / "cells" / empty / "result.json").write_text("[]")
    code, out, err = cli("report", str(root), "--format", "png")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "2 cell(s)" in lines[0], err
    assert f"cells/{cut}/result.json: not valid JSON" in lines[0]
    assert f"cells/{empty}/result.json: not a JSON object" in lines[0]
    assert "Traceback" not in err and "JSONDecodeError" not in err
    assert (root / "sweep_results.csv").read_bytes() == table  # not replaced by a table of "pending" cells
    assert (root / "summary.md").read_bytes() == summary


@pytest.mark.slow  # two fresh processes: torch imports and a 3-cell sweep (~12 s)
def test_a_workers_warm_up_is_recorded_apart_from_train_seconds(tmp_path: Path, candles: Path) -> None:
    # the mechanism: torch loads torch._dynamo lazily on the first use_deterministic_algorithms (seconds);
    # warm_up does that once per process and says how long it took
    code = ("import sys\nfrom cryptonorm.sweeps.cell import warm_up\n"
            "assert 'torch._dynamo' not in sys.modules\n"
            "w = warm_up()\nassert 'torch._dynamo' in sys.modules and w > 0, w\n"
            "assert warm_up() == 0.0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stderr[-2000:]
    # end to end in a fresh process: the first cell of the (inline) worker carries the warm-up, the others not
    path = write_sweep(tmp_path, candles, ONE_CELL.replace("seed: [0]", "seed: [0, 1, 2]"))
    r = subprocess.run([sys.executable, "-m", "cryptonorm", "-q", "sweep", str(path), "--out",
                        str(tmp_path / "o"), "--format", "png"], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "o" / "cells").glob("*/result.json"))]
    warm = [r["warmup_seconds"] for r in results if "warmup_seconds" in r]
    assert len(results) == 3 and len(warm) == 1 and warm[0] > 0
    assert all(r["train_seconds"] > 0 for r in results)
    import pandas as pd

    table = pd.read_csv(tmp_path / "o" / "sweep_results.csv")
    assert table["warmup_seconds"].notna().sum() == 1 and table["warmup_seconds"].max() == warm[0]



def test_a_seed_left_out_of_the_dm_test_is_noted_in_the_summary(tmp_path: Path) -> None:
    from cryptonorm.sweeps import outputs as so
    from cryptonorm.sweeps import report as sr

    root = _fake_sweep(tmp_path / "fake")
    full = sr.build_report(root)
    cid = "mlp-batch-2-1"  # an ok cell of the planted effect: batch at batch size 2, seed 1
    (root / "cells" / cid / "run" / "forecasts.csv").unlink()
    rep = so.render(root, fmt="png")
    t = rep.tests[rep.tests["metric"] == "test_mse"].set_index(["model.kind", "train.batch_size", "model.norm"])
    before = full.tests[full.tests["metric"] == "test_mse"].set_index(["model.kind", "train.batch_size",
                                                                       "model.norm"])
    row = t.loc[("mlp", "2", "batch")]
    assert row["dm_seeds"].startswith("0-/2+") and before.loc[("mlp", "2", "batch"), "dm_seeds"].startswith("0-/3+")
    assert "DM without seed 1 (forecasts.csv missing or unreadable)" in row["note"]
    assert row["p_t"] == before.loc[("mlp", "2", "batch"), "p_t"]  # the metric tests keep every seed
    md = (root / "summary.md").read_text()
    assert "DM without seed 1 (forecasts.csv missing or unreadable)" in md


def test_a_verdict_without_its_data_hash_says_so(tmp_path: Path) -> None:
    from cryptonorm.claims import markdown
    from cryptonorm.claims.run import _data_detail
    from cryptonorm.config import load_config

    cfg = load_config(None)
    (tmp_path / "sweep.json").write_text(json.dumps({"data": {"hash": "abc", "rows": 12}}))
    assert _data_detail(cfg, tmp_path)["rows"] == 12 and "missing" not in _data_detail(cfg, tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"data": {}}))  # an older sweep.json: no rows, no hash
    d = _data_detail(cfg, tmp_path)
    assert "hash" not in d and d["missing"].startswith("no data hash or row count")
    rec = {"verdict": "supported", "data": {"kind": "real", **d}, "seeds": ["0", "1"], "reason": "r"}
    assert "no data hash or row count" in markdown.verdict_line(rec)
    (tmp_path / "sweep.json").unlink()
    assert "sweep.json is missing" in _data_detail(cfg, tmp_path)["missing"]


def test_a_claim_that_is_not_a_mapping_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("claim: 5\nrule: {text: x, metric: test_mse}\nsweep: {base: b.yaml, grid: {seed: [0, 1]}}\n")
    code, _, err = cli("study", str(bad), "--quick", "--out", str(tmp_path / "o"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "claim: must be a mapping with the keys id, title" in lines[0] and "(got 5)" in lines[0]
    assert "ClaimHead" not in err and "internal error" not in err and "Traceback" not in err
