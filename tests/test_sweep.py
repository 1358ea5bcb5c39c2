"""Sweeps: grid expansion, bad files, the real CLI end to end, resume after SIGKILL, failed cells, Ray,
the statistics (paired t / Wilcoxon against scipy, Diebold-Mariano) and the report from hand-made results.

Every training here is tiny: 2 months of 1h synthetic candles, an 8-unit MLP, one epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from cryptonorm.errors import ConfigError
from cryptonorm.evaluate import stats as st
from cryptonorm.sweeps import outputs as so
from cryptonorm.sweeps import report as sr
from cryptonorm.sweeps import spec as sw
from tests.cli_run import cli

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: tiny
seed: 0
data:
  exchange: synthetic
  symbol: BTC/USDT
  timeframe: 1h
  since: "2022-01-01"
  until: "2022-03-01"
  dir: {data_dir}
  synthetic: {{seed: 7, signal: 0.15}}
features:
  window: 8
  sma: [10]
  ema: [12]
  macd: []
  bbands: []
  returns: [1, 2, 4]
model:
  kind: mlp
  norm: layer
  hidden: [8]
  dropout: 0.0
train:
  epochs: 3
  batch_size: 64
  device: cpu
  threads: 1
"""

SWEEP = """\
name: tiny
base: base.yaml
set: {train.epochs: 1}
grid:
  model.norm: [none, layer]
  seed: [0, 1]
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("candles")  # fetched once, shared by the module's sweeps


def write_sweep(tmp_path: Path, data_dir: Path, sweep: str = SWEEP, base: str = BASE) -> Path:
    (tmp_path / "base.yaml").write_text(base.format(data_dir=data_dir))
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep)
    return path




def snapshot(sweep_dir: Path) -> dict[str, tuple[int, str]]:
    """cell id -> (mtime_ns, content) of every result.json there is."""
    out = {}
    for p in sorted((sweep_dir / "cells").glob("*/result.json")):
        out[p.parent.name] = (p.stat().st_mtime_ns, p.read_text())
    return out


def results(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "sweep_results.csv")


# ---------------------------------------------------------------- grid expansion and bad files


def test_grid_expands_in_order_with_stable_ids(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, tmp_path / "d")
    s = sw.load_sweep(path)
    assert [c.params for c in s.cells] == [{"model.norm": "none", "seed": 0}, {"model.norm": "none", "seed": 1},
                                           {"model.norm": "layer", "seed": 0}, {"model.norm": "layer", "seed": 1}]
    c = s.cells[2]
    assert (c.config.model.norm, c.config.seed, c.config.train.epochs, c.config.name) == ("layer", 0, 1, "tiny")
    assert c.id.startswith("norm-layer_seed-0_")
    assert [x.id for x in sw.load_sweep(path).cells] == [x.id for x in s.cells]  # stable across loads
    assert len({x.id for x in s.cells}) == 4
    # the id follows the config: another epoch count is another experiment, the thread count is not
    assert sw.load_sweep(path, ["train.epochs=2"]).cells[0].id != s.cells[0].id
    assert sw.load_sweep(path, ["train.threads=2"]).cells[0].id == s.cells[0].id
    # every cell shares data and split settings; only the top-level seed varies among seeds
    assert all((x.config.data, x.config.split) == (c.config.data, c.config.split) for x in s.cells)


@pytest.mark.parametrize(("sweep", "expected"), [
    ("name: x\nbase: base.yaml\ngrd: {seed: [0]}\n", "unknown key 'grd': did you mean 'grid'?"),
    ("name: x\nbase: nowhere.yaml\ngrid: {seed: [0]}\n", "base config 'nowhere.yaml' not found"),
    ("name: x\nbase: base.yaml\ngrid: {}\n", "grid is empty"),
    ("name: x\nbase: base.yaml\ngrid: {model.norm: [none, lyer]}\n",
     "cell [model.norm=lyer seed=0]: model.norm: got 'lyer'"),
    ("name: x\nbase: base.yaml\ngrid: {model.nrom: [none]}\n", "did you mean 'model.norm'?"),
    ("name: x\nbase: base.yaml\ngrid: {data.since: ['2022-01-01']}\n", "cannot vary"),
    ("name: x\nbase: base.yaml\ngrid: {model.norm: layer}\n", "grid.model.norm: expected a list of values"),
    ("name: x\nbase: base.yaml\ngrid: {seed: []}\n", "grid.seed is an empty list"),
    ("name: x\nbase: base.yaml\ngrid: {seed: [0, 0]}\n", "grid.seed lists 0 more than once"),
    ("base: base.yaml\ngrid: {seed: [0]}\n", "name: required"),
    ("name: x\nbase: base.yaml\nreference: batch\ngrid: {model.norm: [none, layer]}\n", "reference 'batch'"),
    ("name: x\nbase: base.yaml\ngrid: {seed: [0]}\nzip: {train.batch_size: [2, 8, 32], train.lr: [0.001, 0.002]}\n",
     "need one length, got train.batch_size: 3, train.lr: 2"),
    ("name: x\nbase: base.yaml\ngrid: {seed: [0]}\nzip: {seed: [1], train.lr: [0.1]}\n", "under both grid and zip"),
    ("name: x\nbase: base.yaml\nzip: {data.since: ['2022-01-01']}\n", "zip key 'data.since'"),
    ("name: x\nbase: base.yaml\ngrid: {model.norm: [none]}\nmetric: qlike\n",
     "a return target has no metric 'qlike'; choose from mse"),
    ("name: x\nbase: base.yaml\ngrid: {model.norm: [none]}\nmetric: [mse, sharp]\n", "unknown metric 'sharp'"),
    ("name: x\nbase: base.yaml\nseeds: 3\ngrid: {seed: [0, 1]}\n", "seeds: 3 and a `seed` key"),
    ("name: x\nbase: base.yaml\nseeds: 0\ngrid: {model.norm: [none]}\n", "seeds"),
])
def test_bad_sweep_files_exit_2_with_one_line(tmp_path: Path, sweep: str, expected: str) -> None:
    path = write_sweep(tmp_path, tmp_path / "d", sweep=sweep)
    code, out, err = cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_zip_moves_lists_together_and_seeds_default_to_five(tmp_path: Path) -> None:
    sweep = ("name: z\nbase: base.yaml\ngrid: {model.norm: [none, batch]}\n"
             "zip: {train.batch_size: [2, 64], train.lr: [0.0001, 0.001]}\n")
    s = sw.load_sweep(write_sweep(tmp_path, tmp_path / "d", sweep=sweep))
    assert s.grid == {"model.norm": ["none", "batch"], "seed": [0, 1, 2, 3, 4]}
    assert len(s.cells) == 2 * 5 * 2  # norms x default seeds x zip rows, never batch 2 with lr 0.001
    pairs = {(c.config.train.batch_size, c.config.train.lr) for c in s.cells}
    assert pairs == {(2, 0.0001), (64, 0.001)}
    assert s.grid_keys == ["model.norm", "seed", "train.batch_size", "train.lr"]
    assert s.metrics == ["mse", "rank_ic"]  # a return target's proper metrics by default
    fixed = sw.load_sweep(write_sweep(tmp_path, tmp_path / "d", sweep=sweep + "set: {seed: 3}\nmetric: mae\n"))
    assert {c.config.seed for c in fixed.cells} == {3} and len(fixed.cells) == 4 and fixed.metrics == ["mae"]
    three = sw.load_sweep(write_sweep(tmp_path, tmp_path / "d", sweep=sweep + "seeds: 3\n"))
    assert three.grid["seed"] == [0, 1, 2]


def test_set_cannot_override_a_grid_key(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, tmp_path / "d")
    code, _, err = cli("sweep", str(path), "--set", "model.norm=batch")
    assert code == 2 and "model.norm is a grid key" in err


def test_help_lists_the_commands() -> None:
    code, out, _ = cli("--help")
    assert code == 0 and "sweep" in out and "report" in out
    code, out, _ = cli("sweep", "--help")
    assert code == 0 and "--executor" in out and "--jobs" in out and "--reference" in out


# ---------------------------------------------------------------- end to end through the CLI


def test_tiny_sweep_end_to_end_then_resume_and_report(tmp_path: Path, data_dir: Path) -> None:
    path = write_sweep(tmp_path, data_dir)
    out = tmp_path / "out"
    code, stdout, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    df = results(out)
    assert len(df) == 4 and (df["status"] == "ok").all()
    for col in ("model.norm", "seed", "test_mse", "val_mse", "test_directional_accuracy", "test_ic_spearman",
                "bt_sharpe", "bt_total_return", "bt_max_drawdown", "bt_n_trades", "bh_sharpe", "bh_total_return",
                "train_seconds", "best_epoch", "run_dir", "error"):
        assert col in df.columns, col
    assert df["test_mse"].gt(0).all() and df["error"].isna().all()
    # identical data for every cell: the hash each run recorded is the sweep's, and so are the test bars
    meta = json.loads((out / "sweep.json").read_text())
    hashes = {json.loads((Path(r) / "run.json").read_text())["data"]["hash"] for r in df["run_dir"]}
    assert hashes == {meta["data"]["hash"]}
    bars = [pd.read_csv(Path(r) / "forecasts.csv").query("split == 'test'")["timestamp"].tolist()
            for r in df["run_dir"]]
    assert all(b == bars[0] for b in bars)
    # ... while the seed changes the model: two seeds of one norm forecast differently
    f0, f1 = (pd.read_csv(Path(r) / "forecasts.csv")["forecast"] for r in df[df["model.norm"] == "none"]["run_dir"])
    assert not np.allclose(f0.dropna(), f1.dropna())
    md = (out / "summary.md").read_text()
    assert "Mean ± std over seeds" in md and "p DM" in md and "| layer | 2 |" in md
    for name in ("test_loss_by_norm.png", "sharpe_by_norm.png", "training_curves.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "plots" / "test_loss_vs_batch_size.png").exists()  # batch size is not a grid key
    assert "paired tests vs none" in stdout
    # off a terminal (CliRunner, a pipe, a log): one progress line per finished cell instead of a bar
    cell_lines = [line for line in err.splitlines() if line.startswith("cell ")]
    assert [line.split()[1] for line in cell_lines] == ["1/4", "2/4", "3/4", "4/4"], err
    assert all(" ok " in line and "ETA " in line for line in cell_lines), cell_lines

    # re-run: nothing trains again, nothing is rewritten
    before = snapshot(out)
    code, stdout, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    assert "0 cell(s) run, 4 finished earlier" in stdout
    assert snapshot(out) == before

    # lose one verdict: only that cell runs again
    lost = sorted(before)[1]
    (out / "cells" / lost / "result.json").unlink()
    code, stdout, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    assert "1 cell(s) run, 3 finished earlier" in stdout
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in before.items() if k != lost}
    assert json.loads(after[lost][1])["status"] == "ok"

    # report re-renders tables and plots from the finished cells without training
    (out / "summary.md").unlink()
    for p in (out / "plots").iterdir():
        p.unlink()
    code, stdout, err = cli("report", str(out), "--reference", "layer")
    assert code == 0, err
    assert snapshot(out) == after
    assert "paired tests vs layer" in stdout and (out / "plots" / "sharpe_by_norm.png").exists()
    assert "`none` against `layer`" not in (out / "summary.md").read_text()
    assert "each `model.norm` against `layer`" in (out / "summary.md").read_text()
    code, _, err = cli("report", str(out), "--reference", "batch")
    assert code == 2 and "not a model.norm value" in err
    code, _, err = cli("report", str(tmp_path))
    assert code == 2 and "not a sweep directory" in err


def test_failing_cell_is_recorded_others_finish_and_rerun_retries(tmp_path: Path, data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptonorm import pipeline

    real_train = pipeline.train

    def flaky(cfg: Any, out: Any = None, **kw: Any) -> Any:
        if cfg.model.norm == "layer" and cfg.seed == 1:
            raise RuntimeError("boom: injected failure\nsecond line")
        return real_train(cfg, out, **kw)

    monkeypatch.setattr(pipeline, "train", flaky)
    path = write_sweep(tmp_path, data_dir)
    out = tmp_path / "out"
    code, _, err = cli("sweep", str(path), "--out", str(out), "--jobs", "1")
    assert code == 1
    assert "1 of 4 cells failed" in err
    df = results(out)
    bad = df[df["status"] == "failed"]
    assert len(bad) == 1 and bad.iloc[0]["model.norm"] == "layer" and bad.iloc[0]["seed"] == 1
    assert bad.iloc[0]["error"] == "RuntimeError: boom: injected failure"
    assert (df["status"] == "ok").sum() == 3
    assert "## Failed cells" in (out / "summary.md").read_text()

    monkeypatch.setattr(pipeline, "train", real_train)
    before = snapshot(out)
    code, stdout, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    assert "1 cell(s) run, 3 finished earlier" in stdout
    after = snapshot(out)
    failed_id = bad.iloc[0]["cell_id"]
    assert {k: v for k, v in after.items() if k != failed_id} == {k: v for k, v in before.items() if k != failed_id}
    assert (results(out)["status"] == "ok").all()


def test_runtime_failure_in_a_worker_process(tmp_path: Path, data_dir: Path) -> None:
    """A window longer than the data validates (the config alone is fine) but cannot train: recorded by the
    spawned worker, not fatal. (BatchNorm with batch size 1, once this test's case, is now refused with the
    sweep file: the config alone is wrong, see test_batchnorm_batch_of_one_is_refused_with_the_sweep_file.)"""
    sweep = ("name: long\nbase: base.yaml\nset: {train.epochs: 1}\nseeds: 1\n"
             "grid:\n  features.window: [4, 90000]\n")
    path = write_sweep(tmp_path, data_dir, sweep=sweep)
    out = tmp_path / "out"
    code, _, err = cli("sweep", str(path), "--out", str(out), "--jobs", "2")
    assert code == 1, err
    df = results(out).set_index("features.window")
    assert df.loc[4, "status"] == "ok"
    assert df.loc[90000, "status"] == "failed" and "use more data" in df.loc[90000, "error"], df.loc[90000, "error"]


def test_batchnorm_batch_of_one_is_refused_with_the_sweep_file(tmp_path: Path, data_dir: Path) -> None:
    sweep = ("name: bn1\nbase: base.yaml\nset: {train.epochs: 1, train.batch_size: 1}\n"
             "grid:\n  model.norm: [none, batch]\n")
    code, _, err = cli("sweep", str(write_sweep(tmp_path, data_dir, sweep=sweep)), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cell [model.norm=batch seed=0]: train.batch_size must be >= 2 for model.norm=batch" in err
    assert not (tmp_path / "out").exists()


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process in the group; zombies wait for a reaper and run nothing."""
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_mid_sweep_then_resume(tmp_path: Path, data_dir: Path) -> None:
    # 12 cells on 2 workers: after the first result at most the 2 cells in flight (and one each started
    # before the kill is seen) can finish, so the kill lands mid-sweep however fast a cell is
    many = SWEEP.replace("seed: [0, 1]", "seed: [0, 1, 2, 3, 4, 5]")
    path = write_sweep(tmp_path, data_dir, many)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", "sweep", str(path), "--out", str(out),
                             "--jobs", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list((out / "cells").glob("*/result.json")):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.time() < deadline, "no cell finished in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its pool workers must notice and leave
        proc.wait(timeout=30)
        deadline = time.time() + 30
        while _group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "orphaned sweep workers kept running after the parent was killed"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    done = snapshot(out)
    assert 1 <= len(done) < 12
    code, stdout, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    assert f"{12 - len(done)} cell(s) run, {len(done)} finished earlier" in stdout
    after = snapshot(out)
    assert {k: after[k] for k in done} == done  # finished cells untouched
    df = results(out)
    assert len(df) == 12 and (df["status"] == "ok").all()


def test_a_killed_cell_resumes_from_its_last_epoch(tmp_path: Path, data_dir: Path) -> None:
    """A cell killed after some epochs picks up after the last saved one when the sweep runs again, to the
    result an uninterrupted cell gives; leftovers it cannot resume (another config) are removed, not reused."""
    from cryptonorm import pipeline
    from cryptonorm.config import apply_overrides, build_config
    from cryptonorm.sweeps.results import cell_dir

    one = "name: tiny\nbase: base.yaml\nset: {train.epochs: 4, train.patience: 100}\ngrid:\n  seed: [0]\n"
    path = write_sweep(tmp_path, data_dir, one)
    (cell,) = sw.load_sweep(path).cells
    assert cli("-q", "sweep", str(path), "--out", str(tmp_path / "full"))[0] == 0  # the uninterrupted reference
    want = json.loads((cell_dir(tmp_path / "full", cell) / "result.json").read_text())

    def killed_after(epochs: int, cfg: Any, out: Path) -> None:
        def stop(record: dict[str, Any]) -> None:
            if record["epoch"] > epochs:  # the state of `epochs` is saved; this one's is not
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            pipeline.train(cfg, out, progress=stop)
        assert (out / "resume.pt").exists() and not (out / "run.json").exists()

    run = cell_dir(tmp_path / "killed", cell) / "run"
    killed_after(2, cell.config, run)
    code, _, err = cli("-q", "sweep", str(path), "--out", str(tmp_path / "killed"))
    assert code == 0, err
    got = json.loads((run.parent / "result.json").read_text())
    assert got["status"] == "ok" and got["resumed"] == "after epoch 2" and want["resumed"] is None
    assert got["metrics"] == want["metrics"] and got["backtest"] == want["backtest"]
    assert (run / "forecasts.csv").read_bytes() == (cell_dir(tmp_path / "full", cell) / "run" /
                                                     "forecasts.csv").read_bytes()

    other = cell_dir(tmp_path / "stale", cell) / "run"  # an attempt of another config in the cell's folder
    killed_after(1, build_config(apply_overrides(cell.config.to_dict(), ["train.lr=0.01"])), other)
    code, _, err = cli("-q", "sweep", str(path), "--out", str(tmp_path / "stale"))
    assert code == 0, err
    fresh = json.loads((other.parent / "result.json").read_text())
    assert fresh["status"] == "ok" and fresh["resumed"] is None and fresh["metrics"] == want["metrics"]


def test_ray_executor_on_a_local_instance(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("ray")
    sweep = "name: tiny-ray\nbase: base.yaml\nset: {train.epochs: 1}\nseeds: 1\ngrid:\n  model.norm: [none, layer]\n"
    path = write_sweep(tmp_path, data_dir, sweep=sweep)
    out = tmp_path / "out"
    code, stdout, err = cli("sweep", str(path), "--out", str(out), "--executor", "ray", "--jobs", "2")
    assert code == 0, err
    df = results(out)
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert all((Path(r) / "forecasts.csv").exists() for r in df["run_dir"])
    import ray

    assert not ray.is_initialized()  # the instance we started is shut down again


def test_ray_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    path = write_sweep(tmp_path, tmp_path / "d")
    code, _, err = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "ray")
    assert code == 2
    assert err.strip() == "error: --executor ray needs Ray, which is not installed: pip install cryptonorm[ray]"


# ---------------------------------------------------------------- statistics


def test_paired_t_and_wilcoxon_match_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.1, 7), rng.normal(1.05, 0.1, 7)
    t, ref = st.paired_t(a, b), stats.ttest_rel(a, b)
    assert t.statistic == pytest.approx(ref.statistic) and t.pvalue == pytest.approx(ref.pvalue) and t.n == 7
    w, wref = st.paired_wilcoxon(a, b), stats.wilcoxon(a, b)
    assert w.statistic == pytest.approx(wref.statistic) and w.pvalue == pytest.approx(wref.pvalue)


def test_paired_tests_degenerate_cases_are_nan_with_a_note() -> None:
    one = st.paired_t(np.array([1.0]), np.array([2.0]))
    assert np.isnan(one.pvalue) and "got 1" in one.note
    equal = st.paired_t(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5]))  # every difference is 0.5
    assert np.isnan(equal.statistic) and np.isnan(equal.pvalue) and "all paired differences are equal" in equal.note
    same = st.paired_wilcoxon(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert np.isnan(same.pvalue) and "zero" in same.note
    nan_pair = st.paired_t(np.array([1.0, np.nan, 3.0]), np.array([1.5, 2.0, 2.0]))
    assert nan_pair.n == 2  # a missing value drops its pair


def test_diebold_mariano() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(0, 0.01, 500)
    good = y + rng.normal(0, 0.002, 500)
    bad = y + rng.normal(0, 0.01, 500)
    # identical forecasts: no difference at all
    same = st.diebold_mariano((good - y) ** 2 - (good - y) ** 2)
    assert np.isnan(same.statistic) and same.pvalue == 1.0
    # clearly better forecasts: tiny p, and the sign says which one is better
    better = st.diebold_mariano((good - y) ** 2 - (bad - y) ** 2)
    assert better.pvalue < 0.01 and better.statistic < 0 and better.n == 500
    assert st.diebold_mariano((bad - y) ** 2 - (good - y) ** 2).statistic == pytest.approx(-better.statistic)
    # two forecasts of equal quality: no rejection at 1%
    other = y + rng.normal(0, 0.002, 500)
    assert st.diebold_mariano((good - y) ** 2 - (other - y) ** 2).pvalue > 0.01
    assert np.isnan(st.diebold_mariano(np.array([0.1])).pvalue)


def test_diebold_mariano_matches_the_formula_with_overlap() -> None:
    d = np.array([0.3, -0.1, 0.4, 0.2, -0.2, 0.5, 0.1, 0.0, 0.3, 0.2])
    T, h = len(d), 3
    u = d - d.mean()
    gamma = [float(u[k:] @ u[: T - k]) / T for k in range(h)]
    var = gamma[0] + 2 * (2 / 3 * gamma[1] + 1 / 3 * gamma[2])  # Bartlett weights, lag h - 1 = 2
    stat = d.mean() / np.sqrt(var / T) * np.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    r = st.diebold_mariano(d, horizon=h)
    assert r.statistic == pytest.approx(stat)
    assert r.pvalue == pytest.approx(2 * stats.t.sf(abs(stat), T - 1))


def test_per_bar_losses_pair_on_common_test_bars() -> None:
    def frame(ts: list[int], f: list[float], y: list[float], split: str = "test") -> pd.DataFrame:
        return pd.DataFrame({"timestamp": ts, "forecast": f, "y": y, "split": [split] * len(ts)})

    a = st.bar_loss(frame([1, 2, 3], [3.0, 1.0, np.nan], [0.0, 0.0, 0.0]), "mse")
    b = st.bar_loss(frame([1, 2, 3, 4], [0.0, 2.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]), "mse")
    la, lb = st.common_bars(a, b)  # bar 3 has no forecast in a, bar 4 is not in a: bars 1 and 2 are common
    assert la.tolist() == [9.0, 1.0] and lb.tolist() == [0.0, 4.0]
    assert len(st.bar_loss(frame([1], [5.0], [0.0], "val"), "mse")) == 0  # validation rows never count


# ---------------------------------------------------------------- the report from hand-made results


def _fake_sweep(root: Path) -> Path:
    """A finished sweep written by hand: kinds x norms x batch sizes x seeds, one cell failed, one pending."""
    grid: dict[str, list[Any]] = {"model.kind": ["mlp", "lstm"], "model.norm": ["layer", "batch"],
                                  "train.batch_size": [2, 32], "seed": [0, 1, 2]}
    cells = []
    rng = np.random.default_rng(3)
    ts = np.arange(50)
    y = rng.normal(0, 1, 50)
    for kind in grid["model.kind"]:
        for norm in grid["model.norm"]:
            for bs in grid["train.batch_size"]:
                for seed in grid["seed"]:
                    params = {"model.kind": kind, "model.norm": norm, "train.batch_size": bs, "seed": seed}
                    cid = f"{kind}-{norm}-{bs}-{seed}"
                    cells.append({"id": cid, "params": params, "seed": seed})
                    if (kind, norm, bs, seed) == ("lstm", "batch", 32, 2):
                        continue  # pending: never ran
                    run = root / "cells" / cid / "run"
                    run.mkdir(parents=True)
                    # batch norm is worse at batch size 2: a planted effect the tests must find
                    noise = 2.0 if (norm == "batch" and bs == 2) else 0.5
                    f = y + rng.normal(0, noise, 50)
                    pd.DataFrame({"timestamp": ts, "close": 1.0, "forecast": f, "y": y, "outcome": y,
                                  "split": "test"}).to_csv(run / "forecasts.csv", index=False)
                    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7],
                                  "val_loss": [1.0, 0.9, 0.85 + 0.1 * seed]}).to_csv(run / "history.csv",
                                                                                    index=False)
                    failed = (kind, norm, bs, seed) == ("mlp", "layer", 32, 1)
                    res: dict[str, Any] = {"cell_id": cid, "params": params, "seed": seed,
                                           "status": "failed" if failed else "ok",
                                           "error": "RuntimeError: boom" if failed else None,
                                           "config_hash": "x", "data_hash": "h"}
                    if not failed:
                        res |= {"metrics": {"test": {"mse": float(np.mean((f - y) ** 2)), "mae": 0.1},
                                            "val": {"mse": 1.0}},
                                "backtest": {"strategy": {"sharpe": float(rng.normal()), "total_return": 0.1,
                                                          "trades": 4}, "buy_and_hold": {"sharpe": 0.5}},
                                "train_seconds": 1.0, "best_epoch": 3}
                    (root / "cells" / cid / "result.json").write_text(json.dumps(res))
    meta = {"name": "fake", "grid": grid, "horizon": 1, "target": "return", "reference": None,
            "data": {"hash": "h", "rows": 50, "path": "x"}, "cells": cells}
    (root / "sweep.json").write_text(json.dumps(meta))
    return root


def test_report_from_hand_made_results(tmp_path: Path) -> None:
    root = _fake_sweep(tmp_path / "fake")
    code, stdout, err = cli("report", str(root))
    assert code == 0, err
    rep = sr.build_report(root)
    assert rep.reference == "layer"  # the first norm listed
    assert rep.counts == {"cells": 24, "ok": 22, "failed": 1, "pending": 1}
    s = rep.summary.set_index(["model.kind", "model.norm", "train.batch_size"])
    row = s.loc[("mlp", "batch", "2")]
    mses = rep.results[(rep.results["model.kind"] == "mlp") & (rep.results["model.norm"] == "batch")
                       & (rep.results["train.batch_size"] == 2)]["test_mse"]
    assert row["test_mse_mean"] == pytest.approx(mses.mean()) and row["test_mse_std"] == pytest.approx(mses.std())
    assert row["n_ok"] == 3
    assert rep.metrics == ["test_mse", "test_rank_ic"] and set(rep.tests["metric"]) == {"test_mse"}
    assert "rank_ic: no finished cell reports it; not tested" in rep.notes  # shows what exists, never crashes
    t = rep.tests[rep.tests["metric"] == "test_mse"].set_index(["model.kind", "train.batch_size"])
    # the planted effect: batch at batch size 2 loses to layer in every seed's own DM test; with 3 seeds the
    # sign test over seeds cannot go below 2 / 2^3 = 0.25, and the report says so
    assert t.loc[("mlp", "2"), "effect"] > 0 and t.loc[("mlp", "2"), "better"] == "no"
    assert t.loc[("mlp", "2"), "dm_seeds"].startswith("0-/3+ (0-/3+ at 5%)")
    assert t.loc[("mlp", "2"), "p_dm"] == pytest.approx(0.25) == rep.min_p["dm_sign"]
    assert (rep.tests["p_t_holm"].dropna() >= rep.tests["p_t"].dropna()).all()
    deg = rep.degradation.set_index(["model.kind", "model.norm", "train.batch_size"])
    assert deg.loc[("mlp", "batch", "2"), "degradation"] > 0 and set(rep.interaction["model.kind"]) == {"mlp", "lstm"}
    # failed (mlp, layer, 32, seed 1) and pending (lstm, batch, 32, seed 2) cells drop their pairs
    assert t.loc[("mlp", "32"), "n_seeds"] == 2 and t.loc[("lstm", "32"), "n_seeds"] == 2
    a = rep.results.query("`model.kind` == 'mlp' and `train.batch_size` == 2")
    la = a[a["model.norm"] == "layer"].sort_values("seed")["test_mse"].to_numpy()
    ba = a[a["model.norm"] == "batch"].sort_values("seed")["test_mse"].to_numpy()
    assert t.loc[("mlp", "2"), "p_t"] == pytest.approx(stats.ttest_rel(ba, la).pvalue)
    md = (root / "summary.md").read_text()
    assert "RuntimeError: boom" in md and "1 pending" in md and "| mlp | batch | 2 | 3 |" in md
    assert "smallest reachable p with 3 seed(s): Wilcoxon 0.250" in md and "interaction" in md
    for name in ("test_loss_by_norm.png", "sharpe_by_norm.png", "test_loss_vs_batch_size.png",
                 "training_curves.png"):
        assert (root / "plots" / name).stat().st_size > 1000
    assert not list((root / "plots").glob(".*"))  # no temp files left behind
    csv = results(root)
    assert len(csv) == 24 and set(csv["status"]) == {"ok", "failed", "pending"}


def test_report_without_norm_or_seed_keys(tmp_path: Path) -> None:
    root = tmp_path / "s"
    (root / "cells" / "a").mkdir(parents=True)
    (root / "cells" / "a" / "result.json").write_text(json.dumps(
        {"cell_id": "a", "params": {"train.lr": 0.001}, "seed": 0, "status": "ok", "data_hash": "h",
         "metrics": {"test": {"mse": 1.0}}}))
    (root / "sweep.json").write_text(json.dumps(
        {"name": "lr", "grid": {"train.lr": [0.001, 0.01]}, "data": {"hash": "h"},
         "cells": [{"id": "a", "params": {"train.lr": 0.001}, "seed": 0},
                   {"id": "b", "params": {"train.lr": 0.01}, "seed": 0}]}))
    rep = so.render(root)
    assert rep.reference is None and not len(rep.tests)
    assert any("model.norm is not a grid key" in n for n in rep.notes)
    with pytest.raises(ConfigError):
        sr.build_report(tmp_path)
