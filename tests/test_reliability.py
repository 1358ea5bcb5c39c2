"""Reliability: real `cryptonorm` processes killed (SIGTERM, SIGKILL) at seeded random moments, concurrent
fetches, and the bad-input contract as one table.

After any kill every file is complete (it parses as what its name says: parquet, JSON, CSV, YAML, PNG, a
checkpoint that loads with weights_only=True) or absent; only the hidden temp file of an interrupted atomic
write may remain. The next run completes; for fetch, the store then equals an uninterrupted fetch exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import build_config, load_config, read_yaml
from cryptonorm.data.candles import clean
from cryptonorm.data.store import read_store, store_path
from cryptonorm.pipeline.rundir import MARKER
from tests.cli_run import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TEMP = re.compile(r"^\..+\.tmp$")  # what write_atomic / write_text_atomic / torch.save leave when killed mid-write
runner = CliRunner()

# the small, fast experiment every training here uses (the synthetic market of quickstart.yaml)
SMALL = {"train.epochs": 1, "model.hidden": [8], "train.threads": 1, "data.since": "2022-01-01",
         "data.until": "2022-03-01"}


def sets(d: dict[str, Any]) -> list[str]:
    out = []
    for k, v in d.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def spawn(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def kill(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[bool, str]:
    """Send `sig`; True if the process was still running (the kill landed mid-way)."""
    alive = proc.poll() is None
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return alive, err


def finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err + out


def check_files(root: Path) -> list[Path]:
    """Every file under `root` is complete; returns the temp files of interrupted atomic writes."""
    from cryptonorm.learn.checkpoints import load_checkpoint, load_train_state

    temps = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        name = p.name
        if TEMP.match(name):
            temps.append(p)
        elif name.endswith(".lock"):
            assert p.stat().st_size == 0, p  # filelock's lock file holds nothing
        elif name.endswith(".parquet"):
            df = pd.read_parquet(p)  # raises on a half-written file
            assert list(df.columns) == ["timestamp", "open", "high", "low", "close", "volume"], p
        elif name.endswith(".json") or name == MARKER:  # MARKER: JSON saying which command made the folder
            json.loads(p.read_text())
        elif name.endswith(".csv"):
            pd.read_csv(p)
        elif name.endswith(".yaml"):
            build_config(read_yaml(p))
        elif name == "resume.pt":
            load_train_state(p)  # the training state after the last finished epoch, weights_only=True inside
        elif name.endswith(".pt"):
            load_checkpoint(p)  # torch.load(..., weights_only=True) inside
        elif name.endswith(".png"):
            data = p.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), p
        elif name.endswith(".md"):
            assert p.read_text(encoding="utf-8").strip(), p
        elif name.endswith(".html"):
            assert p.read_text(encoding="utf-8").rstrip().endswith("</html>"), p  # a whole page, not half
        elif name == "plotly.min.js":
            assert p.stat().st_size > 1_000_000, p  # the offline plotly bundle, written atomically
        else:
            raise AssertionError(f"unexpected file {p} (a journal page set aside as unreadable?)")
    return temps


# ---------------------------------------------------------------- kills: fetch

FETCH = {"data.timeframe": "1m", "data.since": "2022-01-01", "data.until": "2022-03-01"}  # 84,960 candles, 85 pages


def test_fetch_killed_at_random_moments_resumes_to_the_exact_store(tmp_path: Path) -> None:
    ref_dir, data = tmp_path / "reference", tmp_path / "store"
    (ref,) = pipeline.fetch(load_config(None, [f"{k}={v}" for k, v in FETCH.items()] + [f"data.dir={ref_dir}"]))
    expected = read_store(ref.path)
    assert len(expected) == 84_960
    path = store_path(data, str(ref.path.parent.relative_to(ref_dir)), "BTC/USDT", "1m")
    journal = path.parent / f".{path.name}.journal"
    args = ["fetch", *sets(FETCH), "--data-dir", str(data)]
    rng = np.random.default_rng(7)
    landed = 0
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
        proc = spawn(args, tmp_path)
        if rng.random() < 0.6:  # a random moment once pages arrive: the download, or the final merge...
            wait_for(lambda: any(journal.glob("*.parquet")), proc)
            time.sleep(rng.uniform(0, 0.3))
        else:  # ...or from the start: imports, merging what the last kill left in the journal
            time.sleep(rng.uniform(0.3, 1.5))
        alive, err = kill(proc, sig)
        landed += alive
        assert "Traceback" not in err
        check_files(data)
        parts = [read_store(path), *(pd.read_parquet(p) for p in journal.glob("*.parquet"))]
        kept = clean(pd.concat(parts, ignore_index=True))  # what the kill left: an exact subset, nothing wrong
        pd.testing.assert_frame_equal(kept, expected[expected["timestamp"].isin(kept["timestamp"])]
                                      .reset_index(drop=True))
    assert landed >= 2, "the kills came after the fetch had finished: nothing was interrupted"
    finish(spawn(args, tmp_path))
    got = read_store(path)
    pd.testing.assert_frame_equal(got, expected)
    assert path.read_bytes() == ref.path.read_bytes()  # the very same file as an uninterrupted fetch
    assert not list(journal.glob("*.parquet")) and not (path.parent / f".{path.name}.pending.json").exists()
    check_files(data)  # temp files of the killed writes may remain: see test_stale_temp_files_are_cleaned_up


def test_concurrent_fetches_of_overlapping_ranges_store_the_union_exactly(tmp_path: Path) -> None:
    ranges = [{"data.since": "2022-01-01", "data.until": "2022-01-20"},
              {"data.since": "2022-01-10", "data.until": "2022-01-30"},
              {"data.since": "2022-01-05", "data.until": "2022-01-25"}]
    ref_dir, data = tmp_path / "reference", tmp_path / "store"
    both = {"data.timeframe": "1m", "data.since": "2022-01-01", "data.until": "2022-01-30"}
    (ref,) = pipeline.fetch(load_config(None, [f"{k}={v}" for k, v in both.items()] + [f"data.dir={ref_dir}"]))
    procs = [spawn(["fetch", "--timeframe", "1m", *sets(r), "--data-dir", str(data)], tmp_path) for r in ranges]
    for proc in procs:
        finish(proc)
    path = store_path(data, str(ref.path.parent.relative_to(ref_dir)), "BTC/USDT", "1m")
    assert check_files(data) == []
    # the union has no hole: [01-01, 01-30) in one piece, equal to one fetch of that range
    pd.testing.assert_frame_equal(read_store(path), read_store(ref.path))


# ---------------------------------------------------------------- kills: train


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("store")
    pipeline.fetch(load_config(QUICK, ["data.since=2022-01-01", "data.until=2022-04-01", f"data.dir={d}"]))
    return d


def test_train_killed_at_random_moments_leaves_complete_files_and_reruns(tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    # long enough (1,500 tiny epochs, ~10 s of training on an idle 2-core machine) that every kill lands before the end
    over = {**SMALL, "data.until": "2022-04-01", "train.epochs": 1500, "train.patience": 2000, "data.dir": str(store)}
    args = ["train", QUICK, *sets(over), "--out", str(run_dir)]
    rng = np.random.default_rng(11)
    landed = 0
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        proc = spawn(args, tmp_path)
        anchor = rng.choice(["time", "config", "model"])
        if anchor == "time":
            time.sleep(rng.uniform(0.3, 4.0))
        else:  # once training started (config.yaml written) or a checkpoint exists, then a little later
            marker = run_dir / ("config.yaml" if anchor == "config" else "model.pt")
            wait_for(marker.exists, proc)
            time.sleep(rng.uniform(0, 0.6))
        alive, err = kill(proc, sig)
        landed += alive
        assert "Traceback" not in err
        if run_dir.exists():
            check_files(run_dir)
    assert landed >= 2
    finish(spawn(args, tmp_path))
    check_files(run_dir)
    for name in ("config.yaml", "model.pt", "scaler.json", "history.csv", "metrics.json", "forecasts.csv",
                 "run.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert len(pd.read_csv(run_dir / "history.csv")) == 1500


# ---------------------------------------------------------------- kills: sweep


def test_sweep_killed_at_random_moments_resumes_and_completes(tmp_path: Path, store: Path) -> None:
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "s", "base": QUICK,
        "set": {**SMALL, "data.until": "2022-04-01", "train.epochs": 3, "data.dir": str(store)},
        "grid": {"model.norm": ["none", "layer"], "seed": [0, 1]},
    }))
    out = tmp_path / "sweep"
    args = ["sweep", str(sweep_file), "--out", str(out)]
    rng = np.random.default_rng(5)
    landed = 0
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = spawn(args, tmp_path)
        if rng.random() < 0.5:
            n = int(rng.integers(1, 4))

            def cells_done(n: int = n) -> bool:
                return len(list(out.glob("cells/*/result.json"))) >= n

            wait_for(cells_done, proc)
            time.sleep(rng.uniform(0, 0.5))
        else:
            time.sleep(rng.uniform(1.0, 5.0))
        alive, err = kill(proc, sig)
        landed += alive
        assert "Traceback" not in err
        if out.exists():
            check_files(out)
    assert landed >= 1
    finish(spawn(args, tmp_path))
    check_files(out)
    results = pd.read_csv(out / "sweep_results.csv")
    assert len(results) == 4 and (results["status"] == "ok").all()
    for r in out.glob("cells/*/result.json"):
        assert json.loads(r.read_text())["status"] == "ok"


# ---------------------------------------------------------------- what a kill should (and does not yet) leave


def test_sigterm_exits_like_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "store"
    proc = spawn(["fetch", *sets(FETCH), "--data-dir", str(data)], tmp_path)
    wait_for(lambda: len(list(data.rglob(".*.journal/*.parquet"))) >= 3, proc)
    alive, err = kill(proc, signal.SIGTERM)
    assert alive
    assert proc.returncode in (130, 143)
    assert err.strip().startswith("interrupted") and len(err.strip().splitlines()) == 1
    assert check_files(data) == []


def test_stale_temp_files_are_cleaned_up(tmp_path: Path) -> None:
    data = tmp_path / "store"
    args = ["fetch", "--timeframe", "1h", "--since", "2022-01-01", "--until", "2022-01-10", "--data-dir", str(data)]
    assert cli(*args)[0] == 0
    (path,) = data.glob("synthetic/*/BTC_USDT-1h.parquet")
    journal = path.parent / f".{path.name}.journal"
    journal.mkdir()
    stale = [path.parent / f".{path.name}.a1b2c3d4.tmp", journal / ".001641000000000.parquet.e5f6g7h8.tmp"]
    for p in stale:
        p.write_bytes(b"PAR1 half a page")
        os.utime(p, (time.time() - 7200, time.time() - 7200))  # left by a kill two hours ago
    assert cli(*args[:-4], "--until", "2022-01-20", "--data-dir", str(data))[0] == 0
    assert not any(p.exists() for p in stale) and not journal.exists()




def test_rerun_after_a_kill_while_config_yaml_was_written(tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".config.yaml.k3x9q1ab.tmp").write_text("name: quick")  # exactly what that kill leaves
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        code, _, err = cli("train", QUICK, *sets({**SMALL, "data.dir": str(store)}), "--out", str(run_dir))
    assert code == 0, err


class _Killed(BaseException):
    """Raised from the progress callback: the process dies there, as with SIGKILL (nothing after it runs)."""


def test_a_killed_rerun_never_leaves_a_run_dir_mixing_two_runs(tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    base = [f"{k}={json.dumps(v)}" for k, v in {**SMALL, "data.dir": str(store)}.items()]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        pipeline.train(load_config(QUICK, base), run_dir)
        pipeline.backtest(run_dir)

        def die(info: dict[str, Any]) -> None:
            raise _Killed

        with pytest.raises(_Killed):  # a second run, other settings, killed after its first epoch
            pipeline.train(load_config(QUICK, [*base, "features.window=6", "seed=3"]), run_dir, force=True,
                           progress=die)
        code, out, err = cli("backtest", str(run_dir), "--json")
    assert code == 1, "backtest used a run dir whose config.yaml and model.pt belong to another run than its " \
                      "forecasts.csv and run.json"
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- bad input: the contract, as one table

H = "timestamp,open,high,low,close,volume\n"
ROW = "{t},100,110,90,105,5\n"


def rows(*ts: int) -> str:
    return H + "".join(ROW.format(t=1_640_995_200_000 + 3_600_000 * t) for t in ts)


# 2022-01-03 00:00 .. 04:00 written day/month/year, as European spreadsheets do
DMY = H + "".join(f"03/01/2022 {h:02d}:00,100,110,90,105,5\n" for h in range(5))

# id, command (CONFIG / FILE / STORE / BAD are filled in), files to create, exit code, what the line must say
CASES: list[tuple[str, list[str], dict[str, str], int, list[str]]] = [
    ("malformed-yaml", ["train", "BAD"], {"BAD": "model:\n  norm: [layer\n"}, 2, ["malformed YAML at line", "fix"]),
    ("not-a-mapping", ["train", "BAD"], {"BAD": "- data\n- model\n"}, 2, ["top level must be a mapping"]),
    ("deep-nesting", ["train", "BAD"], {"BAD": "a: " + "[" * 3000}, 2, ["nested too deeply"]),
    ("bad-yaml-date", ["train", "BAD"], {"BAD": "data:\n  since: 2022-02-30\n"}, 2,
     ["data.since", "is not an ISO date", "write e.g."]),
    ("missing-config", ["train", "nope.yaml"], {}, 2, ["not found"]),
    ("bad-override", ["train", "CONFIG", "--set", "model.norm"], {}, 2, ["expected dotted.key=value"]),
    ("wrong-type", ["train", "CONFIG", "--set", "train.epochs=ten"], {}, 2, ["train.epochs", "valid integer"]),
    ("wrong-type-list", ["train", "CONFIG", "--set", "model.hidden=wide"], {}, 2, ["model.hidden"]),
    ("unknown-key", ["train", "CONFIG", "--set", "model.nrom=layer"], {}, 2, ["did you mean 'model.norm'"]),
    ("unknown-section", ["train", "BAD"], {"BAD": "modle:\n  norm: layer\n"}, 2, ["did you mean 'model'"]),
    ("negative-window", ["train", "CONFIG", "--set", "features.window=-3"], {}, 2,
     ["features.window", "greater than or equal to 1"]),
    ("groups-not-dividing", ["train", "CONFIG", "--set", "model.norm=group", "--set", "model.groups=3"], {}, 2,
     ["model.groups=3 must divide", "choose groups among"]),
    ("split-over-one", ["train", "CONFIG", "--set", "split.train=0.8"], {}, 2, ["must be at most 1"]),
    ("since-after-until", ["train", "CONFIG", "--set", "data.since=2022-03-01", "--set", "data.until=2022-02-01"],
     {}, 2, ["data.since (2022-03-01) must be before data.until"]),
    ("impossible-date", ["train", "CONFIG", "--set", "data.until=2022-13-01"], {}, 2, ["data.until", "ISO date"]),
    ("infinite-lr", ["train", "CONFIG", "--set", "train.lr=.inf"], {}, 2, ["train.lr", "finite"]),
    ("nan-fee", ["train", "CONFIG", "--set", "backtest.fee_bps=.nan"], {}, 2, ["backtest.fee_bps", "finite"]),
    ("secret-in-config", ["train", "CONFIG", "--set", "data.exchange_options={apiKey: k}"], {}, 2,
     ["must not be written in a config", "environment"]),
    ("unknown-ccxt-id", ["fetch", "-c", "CONFIG", "--exchange", "binanse"], {}, 2,
     ["unknown exchange 'binanse'", "did you mean binance"]),
    ("exchange-with-path", ["fetch", "-c", "CONFIG", "--exchange", "../x"], {}, 2, ["data.exchange", "ccxt"]),
    ("unknown-symbol", ["fetch", "-c", "CONFIG", "--symbol", "FOO/BAR"], {}, 1,
     ["synthetic has no market 'FOO/BAR'", "BTC/USDT"]),
    ("missing-file", ["train", "CONFIG", "--set", "data.file=FILE"], {}, 1, ["not found"]),
    ("empty-file", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": ""}, 1, ["is empty", "header"]),
    ("header-only", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": H}, 1, ["has no rows"]),
    ("missing-column", ["train", "CONFIG", "--set", "data.file=FILE"],
     {"FILE": "timestamp,open,high,low,close\n1640995200000,1,2,0.5,1.5\n"}, 1, ["lacks column(s) volume", "need"]),
    ("column-twice", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(0, 1).replace(
        "volume\n", "volume,Close\n").replace(",5\n", ",5,1\n")}, 1, ["close more than once", "keep one"]),
    ("nan-values", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(0, 1) + "1641002400000,1,2,,1,1\n"},
     1, ["NaN", "repair"]),
    ("duplicated-timestamps", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(0, 1, 1, 2)}, 1,
     ["duplicated timestamp", "deduplicate"]),
    ("garbage-timestamps", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": H + "soon,1,2,0.5,1.5,1\n"}, 1,
     ["timestamps are neither"]),
    ("infinite-timestamp", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": H + "inf,1,2,0.5,1.5,1\n"}, 1,
     ["infinite timestamp"]),
    ("off-grid", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": H + "1640995200001,1,2,0.5,1.5,1\n"}, 1,
     ["not on the 1h grid", "data.timeframe"]),
    ("inconsistent-ohlc", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": H + "1640995200000,1,0.9,0.5,1,1\n"},
     1, ["inconsistent", "repair"]),
    ("shorter-than-a-window", ["train", "CONFIG", "--set", "data.since=2022-01-01T00:00", "--set",
                               "data.until=2022-01-01T20:00"], {}, 1, ["the data has 20 bars", "use more data"]),
    ("no-store-yet", ["train", "CONFIG", "--set", "data.exchange=binance"], {}, 1, ["cryptonorm fetch"]),
    ("damaged-store", ["train", "CONFIG", "--set", "data.timeframe=2h"], {"STORE-2h": "PAR1 not parquet"}, 1,
     ["unreadable", "delete it and fetch again"]),
    # issue 11: paths, separators and cross-section config checks, one line each
    ("semicolon-csv", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(0, 1, 2).replace(",", ";")}, 1,
     ["separated by semicolons", "','"]),
    ("out-under-a-file", ["train", "CONFIG", "--out=FILE/run"], {"FILE": "x"}, 1,
     ["candles.csv/run", "is a file, not a folder"]),
    ("out-not-permitted", ["train", "CONFIG", "--out", "/sys/cryptonorm-test/run"], {}, 1,
     ["/sys/cryptonorm-test", "choose a location you can write to"]),
    ("data-dir-under-a-file", ["fetch", "-c", "CONFIG", "--set", "data.dir=FILE/store"], {"FILE": "x"}, 1,
     ["candles.csv/store", "is a file, not a folder"]),
    ("batchnorm-batch-of-one", ["train", "CONFIG", "--set", "model.norm=batch", "--set", "train.batch_size=1"], {},
     2, ["train.batch_size must be >= 2 for model.norm=batch"]),
    # issue 24: strict config types, bounds, sizes (one line each, exit 2)
    ("bool-for-int", ["train", "CONFIG", "--set", "train.epochs=true"], {}, 2, ["train.epochs", "a boolean"]),
    ("bool-in-list", ["train", "CONFIG", "--set", "model.hidden=[8, false]"], {}, 2, ["model.hidden", "a boolean"]),
    ("seed-beyond-int64", ["train", "CONFIG", "--set", "seed=99999999999999999999999"], {}, 2,
     ["seed", "beyond the largest integer"]),
    ("threads-beyond-int64", ["train", "CONFIG", "--set", "train.threads=99999999999999999999"], {}, 2,
     ["train.threads", "beyond the largest integer"]),
    ("threads-too-many", ["train", "CONFIG", "--set", "train.threads=100000"], {}, 2,
     ["train.threads", "less than or equal to 4096"]),
    ("negative-seed", ["train", "CONFIG", "--set", "seed=-1"], {}, 2, ["seed", "greater than or equal to 0"]),
    ("section-set-to-a-scalar", ["train", "CONFIG", "--set", "model=3"], {}, 2,
     ["model: is a section, not a single value", "'kind'"]),
    ("huge-config", ["train", "BAD"], {"BAD": "# " + "x" * 1_100_000 + "\n"}, 2, ["1.1 MB", "limit is 1,000 kB"]),
    ("fee-beyond-100-percent", ["train", "CONFIG", "--set", "backtest.fee_bps=20000"], {}, 2,
     ["backtest.fee_bps", "less than or equal to 1000"]),
    ("slippage-too-big", ["train", "CONFIG", "--set", "backtest.slippage_bps=5000"], {}, 2, ["backtest.slippage_bps"]),
    ("leverage-too-big", ["train", "CONFIG", "--set", "backtest.max_leverage=1000"], {}, 2,
     ["backtest.max_leverage", "less than or equal to 100"]),
    ("exchange-urls-not-a-mapping", ["fetch", "-c", "CONFIG", "--set", "data.exchange_options.urls=5"], {}, 2,
     ["data.exchange_options", "urls must be a mapping"]),
    ("time-format-without-percent", ["train", "CONFIG", "--set", "data.time_format=dmy"], {}, 2,
     ["data.time_format", "strftime"]),
    ("day-month-timestamps", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": DMY}, 1,
     ["'03/01/2022 00:00' may be day/month or month/day", "data.time_format"]),
    ("wrong-time-format", ["train", "CONFIG", "--set", "data.file=FILE", "--set", "data.time_format=%Y-%m-%d"],
     {"FILE": DMY}, 1, ["not in data.time_format '%Y-%m-%d'"]),
    ("constant-prices", ["train", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(*range(800))}, 1,
     ["the return target is 0 on all 727 samples (zero variance"]),
    # accepted on purpose: exchange exports are often newest first; sorting loses nothing (duplicates do fail)
    ("newest-first-is-sorted", ["fetch", "-c", "CONFIG", "--set", "data.file=FILE"], {"FILE": rows(5, 4, 3, 2, 1)},
     0, []),
]
CASES.append(("day-month-with-a-time-format", ["fetch", "-c", "CONFIG", "--set", "data.file=FILE", "--set",
                                             "data.time_format=%d/%m/%Y %H:%M"], {"FILE": DMY}, 0, []))
PARAMS = [pytest.param(*c, id=c[0]) for c in CASES] + [
    pytest.param("unknown-option", ["fetch", "--bogus"], {}, 2, ["--bogus"],
                 id="unknown-option"),
    pytest.param("missing-argument", ["train"], {}, 2, ["config"],
                 id="missing-argument"),
]


@pytest.mark.parametrize(("case", "args", "files", "code", "says"), PARAMS)
def test_bad_input_one_line_right_code_and_no_data_touched(case: str, args: list[str], files: dict[str, str],
                                                           code: int, says: list[str], store: Path,
                                                           tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    src = next(store.glob("synthetic/*/BTC_USDT-1h.parquet"))
    folder = data / src.parent.relative_to(store)
    folder.mkdir(parents=True)
    (folder / src.name).write_bytes(src.read_bytes())  # a real store file that must come out untouched
    paths = {"CONFIG": QUICK, "BAD": str(work / "bad.yaml"), "FILE": str(work / "candles.csv")}
    for key, text in files.items():
        target = folder / "BTC_USDT-2h.parquet" if key == "STORE-2h" else Path(paths[key])
        target.write_text(text)
    argv = [paths.get(a, a) if a in paths else a.replace("=FILE", "=" + paths["FILE"]) for a in args]
    if argv and argv[0] in ("train", "fetch"):  # small, inside the stored range; the case's own options win
        small = {k: v for k, v in SMALL.items() if "BAD" not in args or not k.startswith("data.")}
        defaults = [*sets(small), "--set", f"data.dir={data}"] + (["--out", str(work / "run")] if argv[0] == "train"
                                                                  else [])
        argv = [argv[0], *defaults, *argv[1:]]
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        r = runner.invoke(app, argv)
    out, err = r.stdout, r.stderr
    assert r.exit_code == code, (err, out)
    assert "Traceback" not in out + err and "internal error" not in err
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        for s in says:
            assert s in lines[0], (s, lines[0])
        assert not (work / "run").exists()  # a refused command leaves no half-made run directory
    after = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}
    assert after == {p: b for p, b in before.items() if not p.name.endswith(".lock")}  # nothing stored changed
