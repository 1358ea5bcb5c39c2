"""Output a person and a script can read (issue 11): tables are never cut when piped, non-tty progress lines
(training epochs, a retrying fetch), readable UTC datetimes beside millisecond timestamps in CSV outputs,
and the input-reading fixes (gzip named .csv, semicolon CSV, config validate = what train/fetch refuse)."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_run import QUICK, SMALL, cli, fetch_store, sets
from fake_exchange import FakeBinance, RunningServer, exchange_options, real_candles, serving


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_store(tmp_path_factory)


@pytest.fixture(scope="module")
def piped_run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    work = tmp_path_factory.mktemp("run")
    run = work / "r"
    with pytest.MonkeyPatch.context() as mp:  # data.dir relative to the working folder, as a user writes it
        mp.chdir(work)
        code, out, err = cli("run", QUICK, *sets({**SMALL, "data.dir": os.path.relpath(store, work)}), "--out", "r")
    assert code == 0, err
    return run, out, err


def test_run_json_records_absolute_data_paths(piped_run: tuple[Path, str, str], store: Path) -> None:
    run, _, _ = piped_run
    data = json.loads((run / "run.json").read_text())["data"]
    assert Path(data["path"]).is_absolute() and Path(data["path"]).is_file()
    assert Path(data["path"]).is_relative_to(store.resolve())
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["dir"] == str(store.resolve())


def test_piped_tables_are_never_truncated(piped_run: tuple[Path, str, str], store: Path) -> None:
    _, out, _ = piped_run
    assert "…" not in out
    for header in ("directional_accuracy", "ic_spearman", "test (persistence)", "Buy & hold"):
        assert header in out, header
    code, out, err = cli("fetch", *sets({"data.dir": str(store), "data.since": "2022-01-01",
                                         "data.until": "2022-04-01"}))
    assert code == 0, err
    assert "…" not in out and "exchange" in out and "symbol" in out and "missing bars" in out
    assert max(len(line) for line in out.splitlines()) > 80  # the table took its natural width


def test_training_prints_one_progress_line_per_epoch_off_a_terminal(piped_run: tuple[Path, str, str]) -> None:
    _, _, err = piped_run
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, err
    pattern = r"^epoch (\d)/2  train [\d.e-]+  val [\d.e-]+  [\d,]+ samples/s  ETA \d:\d\d:\d\d$"
    assert [int(re.match(pattern, line).group(1)) for line in lines] == [1, 2], lines  # type: ignore[union-attr]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    state = FakeBinance()
    state.add_candles("BTCUSDT", "1h", real_candles("BTC_USDT-1h", rows=1_500, end="2021-10-15"))
    yield from serving(state)


def test_a_retrying_fetch_says_so(server: RunningServer, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {
        "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "dir": str(tmp_path / "store"),
        "since": "2021-09-01", "until": "2021-10-01", "exchange_options": exchange_options(server.url)}}))
    server.state.inject("503", times=2)
    code, _, err = cli("fetch", "-c", str(cfg))
    assert code == 0, err
    retries = [line for line in err.splitlines() if line.startswith("retrying: ")]
    assert len(retries) == 2, err
    assert "attempt 1 of 6 failed, retrying in 0.5 s" in retries[0]
    assert "attempt 2 of 6 failed, retrying in 1 s" in retries[1]


def test_csv_outputs_carry_a_readable_utc_datetime(piped_run: tuple[Path, str, str], tmp_path: Path) -> None:
    run, _, _ = piped_run
    assert cli("predict", str(run))[0] == 0
    for name in ("forecasts.csv", "predictions.csv", "backtest/equity.csv"):
        df = pd.read_csv(run / name)
        assert list(df.columns[:2]) == ["timestamp", "datetime"], name
        want = pd.to_datetime(df["timestamp"], unit="ms", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
        assert (df["datetime"] == want).all(), name
    trades = pd.read_csv(run / "backtest" / "trades.csv")
    if len(trades):
        i = list(trades.columns).index("entry_time")
        assert trades.columns[i + 1] == "entry_datetime"
        assert trades["entry_datetime"].iloc[0] == pd.Timestamp(int(trades["entry_time"].iloc[0]), unit="ms",
                                                                   tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


H = "timestamp,open,high,low,close,volume\n"


def _rows(n: int) -> str:
    return H + "".join(f"{1_640_995_200_000 + 3_600_000 * t},100,110,90,105,5\n" for t in range(n))


def test_a_gzipped_file_named_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_bytes(gzip.compress(_rows(30).encode()))
    code, out, err = cli("fetch", "--set", f"data.file={path}")
    assert code == 0, err
    assert re.search(r"│\s+30\s+│", out), out


def test_a_semicolon_csv_says_the_separator_looks_wrong(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text(_rows(30).replace(",", ";"))
    code, _, err = cli("fetch", "--set", f"data.file={path}")
    assert code == 1
    (line,) = err.strip().splitlines()
    assert str(path) in line and "separated by semicolons" in line and "','" in line


# config validate refuses what train / fetch would refuse for the config alone, with the same line
SAME = [
    (["train", QUICK], ["--set", "model.norm=batch", "--set", "train.batch_size=1"], 2, "train.batch_size must be"),
    (["train", QUICK], ["--set", "model.kind=lstm", "--set", "model.norm=instance", "--set", "features.window=1"],
     2, "features.window >= 2"),
    (["fetch", "-c", QUICK], ["--set", "data.exchange=binanse"], 2, "unknown exchange 'binanse'"),
]


@pytest.mark.parametrize(("command", "args", "code", "says"), SAME, ids=["batchnorm-bs1", "instance-w1", "exchange"])
def test_config_validate_refuses_what_train_and_fetch_refuse(command: list[str], args: list[str], code: int,
                                                            says: str, tmp_path: Path) -> None:
    got_validate = cli("config", "validate", QUICK, *args)
    got_command = cli(*command, *args, "--set", f"data.dir={tmp_path}")
    assert got_validate[0] == got_command[0] == code
    assert says in got_validate[2] and says in got_command[2]
    assert got_validate[2].strip().splitlines()[0] == got_command[2].strip().splitlines()[0]
    assert not list(tmp_path.iterdir())  # refused before anything was written
