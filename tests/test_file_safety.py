"""Never destroy what is not ours (issue 24), through the CLI: folders cryptonorm did not make are refused
(and never emptied, not even with --force), re-backtests never land on another result, exports merge instead
of truncating, a replaced run takes what it produced with it, an interrupt prints the exact command that
resumes, and damaged run files give one clear line instead of "internal error"."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_run import QUICK, ROOT, SMALL, cli, fetch_store, sets

import cryptonorm as cn
from cryptonorm.errors import ConfigError

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
PANEL = ROOT.parent / "shared" / "data" / "panel"


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err and "Error:" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_store(tmp_path_factory)


def train_args(store: Path, out: Path | None, **over: Any) -> list[str]:
    return ["train", QUICK, *sets({**SMALL, "data.dir": str(store), **over}),
            *(["--out", str(out)] if out is not None else [])]


@pytest.fixture(scope="module")
def finished(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with its backtest (tests copy it before changing anything)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = cli("run", QUICK, *sets({**SMALL, "data.dir": str(store)}), "--out", str(run), "--format", "png")
    assert code == 0, err
    return run


def copy_run(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def users_folder(path: Path) -> Path:
    """A folder of the user's that looks like a run: their own config, model, notes and README."""
    (path / "backtest").mkdir(parents=True)
    (path / "config.yaml").write_text("my: own config\n")
    (path / "model.pt").write_bytes(b"my own model")
    (path / "backtest" / "notes.md").write_text("my notes\n")
    (path / "README.txt").write_text("read me\n")
    return path


# ---------------------------------------------------------------- train --out onto a folder not ours


def test_train_refuses_a_users_folder_even_with_force(store: Path, tmp_path: Path) -> None:
    udir = users_folder(tmp_path / "mine")
    before = snapshot(udir)
    code, _, err = cli(*train_args(store, udir))
    assert code == 2
    line = one_line(err)
    assert str(udir) in line and "not a cryptonorm run directory" in line and "--force" in line
    assert snapshot(udir) == before
    code, _, err = cli(*train_args(store, udir), "--force")  # --force never replaces the user's files
    assert code == 2
    line = one_line(err)
    assert "backtest, config.yaml, model.pt" in line and "never replaces" in line
    assert snapshot(udir) == before


def test_force_writes_beside_a_users_files_and_keeps_them(store: Path, tmp_path: Path) -> None:
    udir = tmp_path / "mine"
    udir.mkdir()
    (udir / "README.txt").write_text("read me\n")
    assert cli(*train_args(store, udir))[0] == 2
    code, _, err = cli(*train_args(store, udir), "--force")
    assert code == 0, err
    assert (udir / "run.json").is_file() and (udir / "README.txt").read_text() == "read me\n"
    code, _, err = cli(*train_args(store, udir, seed=3), "--force")  # now ours: replaced, README still kept
    assert code == 0, err
    assert (udir / "README.txt").read_text() == "read me\n"


# ---------------------------------------------------------------- a replaced run takes its products along


def test_train_force_removes_what_the_replaced_run_produced(finished: Path, store: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    assert cli("backtest", str(run), "--set", "backtest.fee_bps=1")[0] == 0
    assert cli("backtest", str(run), "--grid", "backtest.fee_bps=[0,5]")[0] == 0
    produced = sorted(p.name for p in run.iterdir() if p.is_dir() and p.name.startswith("backtest"))
    assert len(produced) == 3, produced  # backtest/, backtest-<hash>/, backtest-grid-<hash>/
    (run / "backtest" / "notes.md").write_text("mine\n")
    (run / "README.txt").write_text("mine\n")
    code, _, err = cli(*train_args(store, run, seed=7), "--force")
    assert code == 0, err
    left = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert left == ["backtest"] and snapshot(run / "backtest") == {"notes.md": b"mine\n"}
    assert (run / "README.txt").read_text() == "mine\n"


def test_a_report_in_another_format_removes_the_stale_one(finished: Path, tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    run = copy_run(finished, tmp_path)
    assert cli("backtest", str(run), "--format", "html")[0] == 0
    assert (run / "backtest" / "report.html").exists() and not (run / "backtest" / "equity.png").exists()
    (run / "backtest" / "notes.md").write_text("mine\n")
    assert cli("backtest", str(run), "--format", "png")[0] == 0
    names = {p.name for p in (run / "backtest").iterdir()}
    assert "equity.png" in names and "report.html" not in names and "plotly.min.js" not in names
    assert (run / "backtest" / "notes.md").read_text() == "mine\n"


# ---------------------------------------------------------------- re-backtests never land on another result


def test_rebacktest_out_refuses_other_results(finished: Path, tmp_path: Path) -> None:
    a, b = copy_run(finished, tmp_path, "a"), copy_run(finished, tmp_path, "b")
    udir = tmp_path / "udir"
    udir.mkdir()
    (udir / "metrics.json").write_text('{"mine": 1}')
    (udir / "report.html").write_text("<p>mine</p>")
    for out in (b, b / "backtest", udir):
        before = snapshot(out)
        code, _, err = cli("backtest", str(a), "--set", "backtest.fee_bps=1", "--out", str(out))
        assert code == 2, (out, err)
        line = one_line(err)
        assert str(out) in line and "--out" in line and "nothing there is replaced" in line
        assert snapshot(out) == before
    new = tmp_path / "new"
    for fee in (1, 2):  # a folder an earlier re-backtest of this run made is ours: replaced
        code, _, err = cli("backtest", str(a), "--set", f"backtest.fee_bps={fee}", "--out", str(new))
        assert code == 0, err
        assert json.loads((new / "metrics.json").read_text())["costs"]["fee_bps"] == fee
    code, _, err = cli("backtest", str(b), "--set", "backtest.fee_bps=1", "--out", str(new))  # run a's: refused
    assert code == 2 and "another run" in one_line(err)


def test_a_default_rebacktest_folder_of_an_older_version_is_still_replaced(finished: Path, tmp_path: Path) -> None:
    from cryptonorm.pipeline.rundir import MARKER

    run = copy_run(finished, tmp_path)
    assert cli("backtest", str(run), "--set", "backtest.fee_bps=1")[0] == 0
    (folder,) = run.glob("backtest-*")
    (folder / MARKER).unlink()  # as a version without markers left it
    code, _, err = cli("backtest", str(run), "--set", "backtest.fee_bps=1")
    assert code == 0, err
    assert (folder / MARKER).is_file()
    (folder / MARKER).unlink()
    code, _, err = cli("backtest", str(run), "--set", "backtest.fee_bps=2", "--out", str(folder))  # not by default
    assert code == 2 and "nothing there is replaced" in one_line(err)


# ---------------------------------------------------------------- Ctrl-C prints the exact command to resume


def _saved_epoch(root: Path) -> int:
    from cryptonorm.learn.checkpoints import load_train_state

    for state in root.glob("runs/*/resume.pt"):
        try:
            return int(load_train_state(state)[1]["epoch"])
        except Exception:
            return 0
    return 0


@pytest.mark.slow  # two trainings in subprocesses: ~30 s on 2 shared cores
def test_the_interrupt_prints_the_exact_command_that_resumes(store: Path, tmp_path: Path) -> None:
    args = train_args(store, None, **{"train.epochs": 12, "train.patience": 100})  # no --out: a new folder
    proc = subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", *args], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _saved_epoch(tmp_path) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "to resume, run: cryptonorm " in err, err
    command = shlex.split(err.split("to resume, run: ", 1)[1].strip())
    run_dir = Path(command[command.index("--out") + 1])
    assert run_dir.parent.name == "runs" and (tmp_path / run_dir / "resume.pt").exists()
    assert command[1:-2] == ["-q", *args]  # the command as given, with --out of the folder it created
    done = subprocess.run([sys.executable, "-m", "cryptonorm", *command[1:]], cwd=tmp_path, env=ENV, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / run_dir / "run.json").read_text())
    assert info["resumed"] and info["resumed"].startswith("after epoch ")
    assert len(list((tmp_path / "runs").iterdir())) == 1  # resumed there, not a second run


def test_run_interrupted_in_its_backtest_says_to_backtest(store: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptonorm.render import plots

    def killed(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the finished run's equity.png is drawn

    monkeypatch.setattr(plots, "plot_equity", killed)
    run = tmp_path / "run"
    code, _, err = cli("run", QUICK, *sets({**SMALL, "data.dir": str(store)}), "--out", str(run), "--format", "png")
    assert code == 130 and (run / "run.json").exists()
    assert err.strip().endswith(f"to resume, run: cryptonorm backtest {run} --format png"), err
    monkeypatch.undo()
    code, _, err = cli(*shlex.split(err.split("to resume, run: ", 1)[1])[1:])
    assert code == 0 and (run / "backtest" / "equity.png").exists(), err


# ---------------------------------------------------------------- one clear line instead of "internal error"


@pytest.mark.parametrize(("error", "says"), [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    # what torch's C++ writer raises when the disk fills during torch.save
    (RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                  "data/0: file write failed"), "the disk may be full"),
])
def test_disk_full_while_saving_the_model_is_one_line(error: Exception, says: str, store: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    real = torch.save

    def full(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        if ".model.pt." in str(f):  # the temp file of model.pt
            raise error
        real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    code, _, err = cli(*train_args(store, run))
    assert code == 1
    line = one_line(err)
    assert str(run / "model.pt") in line and says in line, line
    assert not (run / "run.json").exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_run_json_whose_files_is_not_a_mapping(finished: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["files"] = ["model.pt"]
    (run / "run.json").write_text(json.dumps(info))
    for cmd in (["predict", str(run)], ["backtest", str(run)]):
        code, _, err = cli(*cmd)
        assert code == 1
        line = one_line(err)
        assert str(run / "run.json") in line and "'files'" in line


@pytest.mark.parametrize(("text", "says"), [("", "it is empty"), ("a,b\n1,2\n", "has no timestamp"),
                                            ('timestamp,close\n"x,1\n', "not a valid CSV")])
def test_a_damaged_forecasts_csv_in_a_run_without_hashes(text: str, says: str, finished: Path,
                                                         tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path)
    info = json.loads((run / "run.json").read_text())
    del info["files"]  # a run from before hashes were recorded: nothing tells the edit apart
    (run / "run.json").write_text(json.dumps(info))
    (run / "forecasts.csv").write_text(text)
    for cmd in (["backtest", str(run)], ["backtest", str(run), "--set", "backtest.fee_bps=1"]):
        code, _, err = cli(*cmd)
        assert code == 1
        line = one_line(err)
        assert str(run / "forecasts.csv") in line and says in line, line
    with pytest.raises(Exception, match="forecasts.csv") as e:
        _ = cn.load_run(run).forecasts
    assert type(e.value).__module__ == "cryptonorm.errors"


def test_predict_writes_parquet_by_the_suffix_and_refuses_others(finished: Path, tmp_path: Path) -> None:
    code, _, err = cli("predict", str(finished), "-o", str(tmp_path / "p.csv"))
    assert code == 0, err
    code, _, err = cli("predict", str(finished), "-o", str(tmp_path / "p.parquet"))
    assert code == 0, err
    csv, pq = pd.read_csv(tmp_path / "p.csv"), pd.read_parquet(tmp_path / "p.parquet")  # real parquet
    pd.testing.assert_frame_equal(pq, csv[["timestamp", "close", "forecast"]])
    code, _, err = cli("predict", str(finished), "-o", str(tmp_path / "p.xlsx"))
    assert code == 2
    line = one_line(err)
    assert "p.xlsx" in line and ".csv or .parquet" in line
    assert not (tmp_path / "p.xlsx").exists()


def test_runs_shows_a_broken_config_as_damaged(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = copy_run(finished, root, "broken")
    (run / "config.yaml").write_text("model: {kind: transformer9, norm: 3}\n")
    copy_run(finished, root, "good")
    code, out, err = cli("runs", str(root), "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["good"]["damaged"] is None and rows["good"]["model"] == "mlp"
    bad = rows["broken"]
    assert bad["damaged"] and "config.yaml" in bad["damaged"] and "model.kind" in bad["damaged"]
    assert (bad["model"], bad["norm"], bad["target"]) == (None, None, None)  # nothing invented
    code, out, err = cli("runs", str(root))
    assert code == 0, err
    assert "damaged" in next(ln for ln in out.splitlines() if " broken " in ln)


# ---------------------------------------------------------------- the notebook API says force=True


def test_the_api_replaces_a_run_with_force_and_says_so_in_its_words(store: Path, tmp_path: Path) -> None:
    cfg = cn.load_config(QUICK, {**SMALL, "data.dir": str(store)})
    run = cn.train(cfg, out=tmp_path / "r")
    with pytest.raises(ConfigError) as e:
        cn.train(cfg, out=run.path)
    assert "force=True" in str(e.value) and "--force" not in str(e.value)
    again = cn.train(cfg, out=run.path, force=True)
    assert again.finished and again.path == run.path
    code, _, err = cli(*train_args(store, run.path))  # the same error on the command line names the flag
    assert code == 2 and "--force" in one_line(err) and "force=True" not in err
    for bad in ({"out": 5}, {"out": ["runs/x"]}, {"force": "yes"}):  # the project's error, naming the argument
        with pytest.raises(ConfigError, match=next(iter(bad))):
            cn.train(cfg, **{"out": run.path, **bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="write must be True or False"):
        cn.backtest(run, write="no")  # type: ignore[arg-type]


# ---------------------------------------------------------------- exports merge, never truncate


def _ft_config(tmp_path: Path, since: str, until: str, swap: bool = False) -> Path:
    coin = "ADA_USDT_USDT-1h-futures" if swap else "ADA_USDT-1h"
    data = {"file": str(PANEL / f"{coin}.csv.gz"), "symbol": "ADA/USDT:USDT" if swap else "ADA/USDT",
            "timeframe": "1h", "since": since, "until": until, "dir": str(tmp_path / "store")}
    if swap:
        data.update({"market": "swap", "funding_file": str(PANEL / "ADA_USDT_USDT-funding.csv.gz")})
    path = tmp_path / f"c-{since}-{until}-{swap}.yaml"
    path.write_text(json.dumps({"data": data}))
    return path


def test_export_merges_a_longer_history_and_refuses_conflicts(tmp_path: Path) -> None:
    from cryptonorm.data import freqtrade

    out = tmp_path / "ft"
    long, short = _ft_config(tmp_path, "2022-01-01", "2022-03-01"), _ft_config(tmp_path, "2022-02-01", "2022-02-10")
    assert cli("export", str(long), "--freqtrade", str(out))[0] == 0
    path = out / "ADA_USDT-1h.feather"
    before = freqtrade.read_frame(path)
    code, _, err = cli("export", str(short), "--freqtrade", str(out))
    assert code == 0, err
    after = freqtrade.read_frame(path)
    pd.testing.assert_frame_equal(after, before)  # the 9 days were already there, identical: nothing cut
    later = _ft_config(tmp_path, "2022-02-20", "2022-04-01")
    assert cli("export", str(later), "--freqtrade", str(out))[0] == 0
    union = freqtrade.read_frame(path)
    first, last = str(union["timestamp"].iloc[0])[:10], str(union["timestamp"].iloc[-1])[:10]
    assert (first, last) == ("2022-01-01", "2022-03-31")
    assert union["timestamp"].is_unique and union["timestamp"].is_monotonic_increasing
    edited = union.copy()
    edited.loc[100, "close"] *= 1.01  # another source's candle at a time both hold
    edited.rename(columns={"timestamp": "date"}).to_feather(path)
    kept = path.read_bytes()
    code, _, err = cli("export", str(long), "--freqtrade", str(out))
    assert code == 1
    line = one_line(err)
    assert str(path) in line and "1 candle(s) that differ" in line and "nothing was written" in line
    assert path.read_bytes() == kept


def test_export_writes_a_swaps_funding_file_and_reads_back(tmp_path: Path) -> None:
    cfg = _ft_config(tmp_path, "2022-01-01", "2022-02-01", swap=True)
    out = tmp_path / "ft"
    code, stdout, err = cli("export", str(cfg), "--freqtrade", str(out), "--data-dir", str(tmp_path / "other"))
    assert code == 0, err
    names = sorted(p.name for p in (out / "futures").iterdir())
    assert names == ["ADA_USDT_USDT-1h-futures.feather", "ADA_USDT_USDT-8h-funding_rate.feather"], names
    back = cn.load_config(None, {"data.freqtrade_dir": str(out), "data.symbol": "ADA/USDT:USDT",
                                 "data.market": "swap", "data.timeframe": "1h", "data.since": "2022-01-01",
                                 "data.until": "2022-02-01"})
    from cryptonorm.data.store import load_candles, load_funding

    orig = cn.load_config(cfg)
    pd.testing.assert_frame_equal(load_candles(back), load_candles(orig))
    a, b = load_funding(back), load_funding(orig)
    assert a is not None and b is not None
    merged = b.merge(a, on="timestamp", suffixes=("", "_back"))
    assert len(merged) == len(a) and (merged["rate"] == merged["rate_back"]).all()
    assert not (tmp_path / "other").exists()  # --data-dir is where the store would be read; a file config needs none


def test_clearing_a_killed_backtest_swap_keeps_the_users_file(tmp_path: Path) -> None:
    from cryptonorm.pipeline.rundir import RunDir, write_marker

    run = tmp_path / "run"
    old = run / ".backtest.old.123.tmp"  # killed between the swap and moving the user's notes back
    old.mkdir(parents=True)
    write_marker(run, "run")
    (old / "equity.csv").write_text("timestamp\n1\n")
    (old / "notes.md").write_text("mine\n")
    (run / ".model.pt.abc.tmp").write_bytes(b"half")
    RunDir(run).clear()
    assert snapshot(run) == {".backtest.old.123.tmp/notes.md": b"mine\n", ".cryptonorm": b'{"kind": "run"}\n'}
