"""Results are never silently lost or replaced (issue 11), through the CLI: --force and the run-directory
lock, file hashes checked by predict/backtest, clear errors for a foreign model / edited config / damaged
scaler.json, a backtest folder that is complete or absent, real resume of an interrupted train (single split
and walk-forward), and `run --json` as one document."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from cli_run import QUICK, ROOT, SMALL, cli, fetch_store, sets
from filelock import FileLock

from cryptonorm import pipeline
from cryptonorm.data import store as data_store

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err and "Error:" not in err
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_store(tmp_path_factory)


def train_args(store: Path, out: Path, **over: Any) -> list[str]:
    return ["train", QUICK, *sets({**SMALL, "data.dir": str(store), **over}), "--out", str(out)]


@pytest.fixture(scope="module")
def finished(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with a backtest; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = cli("run", QUICK, *sets({**SMALL, "data.dir": str(store)}), "--out", str(run))
    assert code == 0, err
    return run


def copy_run(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


# ---------------------------------------------------------------- overwrite guard and lock


def test_a_finished_run_is_never_replaced_without_force(finished: Path, store: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = cli(*train_args(store, run, seed=5))
    assert code == 2
    line = one_line(err)
    assert str(run) in line and "finished run" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert (run / "backtest" / "equity.png").exists()
    code, _, err = cli(*train_args(store, run, seed=5), "--force")
    assert code == 0, err
    assert (run / "model.pt").read_bytes() != before["model.pt"]
    assert not (run / "backtest").exists()  # the old backtest belonged to the replaced run


def test_a_second_writer_fails_at_once(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with FileLock(str(run / ".lock")):  # another command holds the run directory
        t0 = time.monotonic()
        code, _, err = cli(*train_args(store, run))
        assert time.monotonic() - t0 < 30
    assert code == 1
    line = one_line(err)
    assert str(run) in line and "in use by another cryptonorm command" in line
    assert not (run / "config.yaml").exists()


def test_two_concurrent_trains_one_wins_one_is_refused(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "cryptonorm", "-q", *train_args(store, run, **{"train.epochs": 4})]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=ENV, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes[0] == 0
    # the loser is refused at once (lock held) or, if it started after the winner finished, as a finished run
    loser = next(e for c, e in results if c != 0)
    assert codes[1] in (1, 2) and ("in use by another" in loser or "finished run" in loser), loser


# ---------------------------------------------------------------- integrity


def test_a_model_copied_from_another_run_is_refused(finished: Path, store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert cli(*train_args(store, other, seed=9))[0] == 0
    run = copy_run(finished, tmp_path)
    shutil.copy(other / "model.pt", run / "model.pt")  # the same shapes: it would load and give other forecasts
    for cmd in (["predict", str(run)], ["backtest", str(run)]):
        code, _, err = cli(*cmd)
        assert code == 1
        line = one_line(err)
        assert str(run / "model.pt") in line and "SHA-256" in line


def test_an_edited_config_is_refused_by_name(finished: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("window: 24", "window: 48"))
    code, _, err = cli("predict", str(run))
    assert code == 1 and str(cfg) in one_line(err)
    # a run without recorded hashes (an older version): the shapes are compared instead of a matmul error
    info = json.loads((run / "run.json").read_text())
    del info["files"]
    (run / "run.json").write_text(json.dumps(info))
    code, _, err = cli("predict", str(run))
    assert code == 1
    line = one_line(err)
    assert "features.window=48" in line and "trained with 24" in line and "mat1" not in line


def test_a_model_of_another_shape_is_a_clear_error(finished: Path, store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert cli(*train_args(store, other, **{"features.window": 12}))[0] == 0
    run = copy_run(finished, tmp_path)
    shutil.copy(other / "model.pt", run / "model.pt")
    info = json.loads((run / "run.json").read_text())
    del info["files"]  # no hashes to compare (a run from an older version): the shapes still are
    (run / "run.json").write_text(json.dumps(info))
    code, _, err = cli("predict", str(run))
    assert code == 1
    line = one_line(err)
    assert str(run / "model.pt") in line and "expects 12 bars" in line and "another run" in line


@pytest.mark.parametrize(("damage", "says"), [
    (lambda t: t[: len(t) // 2], "is not valid JSON"),
    (lambda t: t.replace('"kind": "standard"', '"kind": "zscore"'), "unknown kind 'zscore'"),
    (lambda t: "[]", "lacks the scaler"),
])
def test_a_damaged_scaler_json_names_the_file(damage: Any, says: str, finished: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    path = run / "scaler.json"
    path.write_text(damage(path.read_text()))
    code, _, err = cli("predict", str(run))
    assert code == 1
    line = one_line(err)
    assert says in line and ("scaler.json" in line or "scaler" in line), line


def test_features_in_another_order_are_matched_by_name(finished: Path, tmp_path: Path) -> None:
    code, _, err = cli("predict", str(finished), "-o", str(tmp_path / "a.csv"))
    assert code == 0, err
    run = copy_run(finished, tmp_path)
    info = json.loads((run / "run.json").read_text())
    del info["files"]  # a run from a version that computed the feature columns in another order
    (run / "run.json").write_text(json.dumps(info))
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("returns: [1, 2, 4, 8, 24]", "returns: [24, 8, 4, 2, 1]"))
    from cryptonorm.features.dataset import prepare

    names = json.loads((run / "scaler.json").read_text())["features"]
    now = prepare(data_store.load_candles(pipeline.load_run_config(run)), pipeline.load_run_config(run)).feature_names
    assert sorted(now) == sorted(names) and now != names  # the same features, in another order
    code, _, err = cli("predict", str(run), "-o", str(tmp_path / "b.csv"))
    assert code == 0, err
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    np.testing.assert_array_equal(a["forecast"], b["forecast"])


# ---------------------------------------------------------------- a backtest is complete or absent


def test_an_interrupted_backtest_leaves_the_old_one_whole(finished: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptonorm.render import plots

    run = copy_run(finished, tmp_path)
    old = {p.name: p.read_bytes() for p in (run / "backtest").iterdir()}
    (run / "backtest" / "equity.png").unlink()  # make the old one recognisable
    old.pop("equity.png")

    def killed(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt  # the last file of the folder is being written when the user presses Ctrl-C

    monkeypatch.setattr(plots, "plot_equity", killed)
    code, _, err = cli("backtest", str(run))
    assert code == 130 and err.startswith("interrupted")
    assert {p.name: p.read_bytes() for p in (run / "backtest").iterdir()} == old
    assert not [p for p in run.iterdir() if p.name.startswith(".backtest")]
    monkeypatch.undo()
    shutil.rmtree(run / "backtest")
    monkeypatch.setattr(plots, "plot_equity", killed)
    assert cli("backtest", str(run))[0] == 130
    assert not (run / "backtest").exists()  # never a folder without equity.png


# ---------------------------------------------------------------- resume


def _interrupt_and_resume(args: list[str], run: Path, ready: Any, tmp_path: Path) -> tuple[int, str]:
    """Start `args`, SIGINT it once ready(run) holds, then re-run it in-process; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", *args], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not ready(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "to resume" in err, err
    assert not (run / "run.json").exists()
    code, _, err2 = cli(*args)
    assert code == 0, err2
    return code, err2


def _saved_epoch(run: Path) -> int:
    from cryptonorm.learn.checkpoints import load_train_state

    try:
        return int(load_train_state(run / "resume.pt")[1]["epoch"])
    except Exception:
        return 0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, weights_only=True)
    return dict(payload["state_dict"])


def test_interrupted_train_resumes_to_the_uninterrupted_result(store: Path, tmp_path: Path) -> None:
    over = {"train.epochs": 12, "train.patience": 100, "train.schedule": "cosine", "model.dropout": 0.1}
    full, run = tmp_path / "full", tmp_path / "run"
    assert cli(*train_args(store, full, **over))[0] == 0
    args = train_args(store, run, **over)
    code, _ = _interrupt_and_resume(args, run, lambda r: _saved_epoch(r) >= 3, tmp_path)
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["resumed"] and info["resumed"].startswith("after epoch ")
    assert int(info["resumed"].split()[-1]) >= 3
    assert not (run / "resume.pt").exists()  # finished: nothing left to resume
    cols = ["epoch", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv")[cols], pd.read_csv(full / "history.csv")[cols])
    a, b = _weights(full / "model.pt"), _weights(run / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "forecasts.csv").read_bytes() == (full / "forecasts.csv").read_bytes()


def test_walk_forward_resumes_by_fold(store: Path, tmp_path: Path) -> None:
    over = {"train.epochs": 2, "data.until": "2022-04-01", "backtest.walk_forward.enabled": True,
            "backtest.walk_forward.step": 300, "backtest.walk_forward.train_bars": 700}
    full, run = tmp_path / "full", tmp_path / "run"
    assert cli(*train_args(store, full, **over))[0] == 0
    folds = pd.read_csv(full / "folds.csv")
    assert len(folds) >= 3

    def two_folds_done(r: Path) -> bool:
        try:
            return len(json.loads((r / "resume_folds.json").read_text())["folds"]) >= 2
        except (OSError, ValueError):
            return False

    code, _ = _interrupt_and_resume(train_args(store, run, **over), run, two_folds_done, tmp_path)
    assert code == 0
    assert json.loads((run / "run.json").read_text())["resumed"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "folds.csv"), folds)
    assert (run / "forecasts.csv").read_bytes() == (full / "forecasts.csv").read_bytes()


def test_a_changed_config_refuses_to_resume_naming_the_keys(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    over = {"train.epochs": 40, "train.patience": 100}
    proc = subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", *train_args(store, run, **over)],
                            cwd=tmp_path, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _saved_epoch(run) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    saved = (run / "resume.pt").read_bytes()
    code, _, err = cli(*train_args(store, run, **{**over, "train.lr": 0.01, "seed": 4}))
    assert code == 2
    line = one_line(err)
    assert "seed, train.lr differ" in line and "--force" in line
    assert (run / "resume.pt").read_bytes() == saved  # nothing lost by the refusal
    code, _, err = cli(*train_args(store, run, **{**over, "train.epochs": 2}), "--force")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["resumed"] is None


# ---------------------------------------------------------------- output for scripts


def test_run_json_is_one_document(store: Path, tmp_path: Path) -> None:
    code, out, err = cli("run", QUICK, *sets({**SMALL, "data.dir": str(store)}), "--out", str(tmp_path / "r"),
                         "--json")
    assert code == 0, err
    doc = json.loads(out)  # fails on a second document
    assert doc["run_dir"] == str(tmp_path / "r")
    assert "test" in doc["metrics"] and "strategy" in doc["backtest"]


# ---------------------------------------------------------------- path errors: one line naming the path

PATH_CASES = [
    ("out-under-a-file", ["train", QUICK, "--out", "{FILE}/run"], "{FILE}/run", "is a file, not a folder"),
    ("data-dir-under-a-file", ["fetch", "--until", "2022-01-03", "--data-dir", "{FILE}/store"], "{FILE}/store",
     "is a file, not a folder"),
    ("o-under-a-file", ["features", QUICK, "-o", "{FILE}/f.csv"], "{FILE}", "is a file, not a folder"),
    ("sweep-out-is-a-file", ["sweep", "{SWEEP}", "--out", "{FILE}"], "{FILE}", "is a file, not a folder"),
    ("data-dir-not-permitted", ["fetch", "--until", "2022-01-03", "--data-dir", "/sys/cryptonorm-test"],
     "/sys/cryptonorm-test", "choose a location you can write to"),
    ("o-not-permitted", ["features", QUICK, "-o", "/sys/cryptonorm-test.csv"], "/sys/cryptonorm-test.csv",
     "choose a location you can write to"),
    ("sweep-out-not-permitted", ["sweep", "{SWEEP}", "--out", "/sys/cryptonorm-test"], "/sys/cryptonorm-test",
     "choose a location you can write to"),
]


@pytest.mark.parametrize(("case", "args", "path", "says"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_path_errors_name_the_path(case: str, args: list[str], path: str, says: str, store: Path,
                                   tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"name": "s", "base": QUICK, "set": {**SMALL, "data.dir": str(store)},
                                 "grid": {"seed": [0, 1]}}))
    fill = {"FILE": str(blocker), "SWEEP": str(sweep)}
    argv = [a.format(**fill) for a in args]
    if argv[0] in ("train", "features"):
        argv[2:2] = sets({**SMALL, "data.dir": str(store)})
    code, _, err = cli(*argv)
    assert code == 1
    line = one_line(err)
    assert path.format(**fill) in line and says in line, line
    assert ".tmp" not in line and "Errno" not in line
    assert blocker.read_text() == "not a folder"
