"""The real CLI through CliRunner and subprocesses: exit codes, one-line errors, the synthetic store."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.data.candles import find_gaps
from cryptonorm.data.store import read_store
from tests.cli_run import cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
runner = CliRunner()




def test_version_and_help() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("cryptonorm ")
    code, out, _ = cli("--help")
    assert code == 0 and "fetch" in out and "train" in out and "backtest" in out


def test_cli_module_does_not_import_heavy_libraries() -> None:
    code = "import sys, cryptonorm.cli; print(sorted(m for m in ('torch', 'ccxt', 'pandas', 'matplotlib') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_works() -> None:
    r = subprocess.run([sys.executable, "-m", "cryptonorm", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "cryptonorm" in r.stdout


def test_fetch_synthetic_is_incremental_and_prepends(tmp_path: Path) -> None:
    d = str(tmp_path / "store")
    code, _, err = cli("-q", "fetch", "--since", "2021-03-01", "--until", "2021-04-01", "--data-dir", d)
    assert code == 0, err
    (path,) = (tmp_path / "store" / "synthetic").glob("*/BTC_USDT-1h.parquet")
    first = read_store(path)
    assert len(first) == 31 * 24
    assert first["timestamp"].is_monotonic_increasing and first["timestamp"].is_unique
    # extend the end and start earlier: only the missing bars are added, nothing duplicated or changed
    code, _, err = cli("-q", "fetch", "--since", "2021-02-01", "--until", "2021-05-01", "--data-dir", d)
    assert code == 0, err
    both = read_store(path)
    assert len(both) == (28 + 31 + 30) * 24 and both["timestamp"].is_unique
    pd.testing.assert_frame_equal(both[both["timestamp"].isin(first["timestamp"])].reset_index(drop=True), first)
    assert find_gaps(both["timestamp"].to_numpy(), "1h") == []


def test_synthetic_markets_with_other_parameters_never_share_a_file(tmp_path: Path) -> None:
    for signal in ("0", "0.2", "0"):
        code, _, err = cli("-q", "fetch", "--since", "2021-03-01", "--until", "2021-03-05", "--data-dir",
                           str(tmp_path), "--set", f"data.synthetic.signal={signal}")
        assert code == 0, err
    files = sorted((tmp_path / "synthetic").glob("*/BTC_USDT-1h.parquet"))
    assert len(files) == 2
    a, b = (read_store(f) for f in files)
    assert not a["close"].equals(b["close"])


def test_fetch_open_ended_drops_the_forming_candle(tmp_path: Path) -> None:
    import time

    code, _, err = cli("-q", "fetch", "--since", "2026-01-01", "--timeframe", "1d", "--data-dir", str(tmp_path))
    assert code == 0, err
    (path,) = (tmp_path / "synthetic").glob("*/BTC_USDT-1d.parquet")
    df = read_store(path)
    now_ms = time.time() * 1000
    assert df["timestamp"].iloc[-1] + 86_400_000 <= now_ms  # the last stored candle has closed


def test_fetch_several_symbols_and_gap_listing(tmp_path: Path) -> None:
    code, out, err = cli("fetch", "--symbol", "BTC/USDT", "--symbol", "ETH/USDT", "--since", "2021-01-01",
                         "--until", "2021-01-03", "--data-dir", str(tmp_path), "--gaps")
    assert code == 0, err
    assert len(list((tmp_path / "synthetic").glob("*/ETH_USDT-1h.parquet"))) == 1
    assert "candle store" in out


def test_bad_symbol_names_close_matches(tmp_path: Path) -> None:
    code, out, err = cli("fetch", "--symbol", "BTC/USDC", "--since", "2021-01-01", "--data-dir", str(tmp_path))
    assert code == 1
    assert "no market 'BTC/USDC'" in err and "BTC/USDT" in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1


def test_unknown_exchange_is_a_config_error(tmp_path: Path) -> None:
    code, _, err = cli("fetch", "--exchange", "binanse", "--data-dir", str(tmp_path))
    assert code == 2 and "did you mean" in err and "binance" in err


def test_fetch_data_file_validates_in_place(tmp_path: Path) -> None:
    src = SHARED / "BTC_USDT-1d.csv.gz"
    code, out, err = cli("fetch", "--set", f"data.file={src}", "--set", "data.timeframe=1d")
    assert code == 0, err
    assert "3,029" in out


def test_gappy_real_file_reports_its_gaps(tmp_path: Path) -> None:
    src = SHARED / "BTC_USDT-1h.csv.gz"
    code, out, err = cli("fetch", "--set", f"data.file={src}", "--gaps")
    assert code == 0, err
    gaps = pd.read_csv(SHARED / "BTC_USDT-1h.gaps.csv")
    assert str(len(gaps)) in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,open,high,low,close\n1,2,3,1,2\n", "lacks column(s) volume"),
        ("", "cannot be read"),
        ("timestamp,open,high,low,close,volume\n", "has no rows"),
        ("timestamp,open,high,low,close,volume\n3600000,1,2,0.5,1.5,10\n3600000,1,2,0.5,1.5,10\n", "duplicated"),
        ("timestamp,open,high,low,close,volume\n3600000,1,2,0.5,,10\n", "NaN"),
        ("timestamp,open,high,low,close,volume\n3600000,1,0.9,0.5,1.5,10\n", "inconsistent"),
        ("timestamp,open,high,low,close,volume\nnot-a-date,1,2,0.5,1.5,10\n", "timestamps"),
        ("timestamp,open,high,low,close,volume\n3600001,1,2,0.5,1.5,10\n", "not on the 1h grid"),
    ],
)
def test_bad_user_files(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "c.csv"
    f.write_text(content)
    code, out, err = cli("fetch", "--set", f"data.file={f}")
    assert code == 1, out
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_data_file(tmp_path: Path) -> None:
    code, _, err = cli("fetch", "--set", f"data.file={tmp_path / 'nope.csv'}")
    assert code == 1 and "not found" in err


def test_iso_timestamps_and_seconds_are_accepted(tmp_path: Path) -> None:
    iso = tmp_path / "iso.csv"
    iso.write_text("datetime,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
                   "2024-01-01T01:00:00Z,1.5,2,1,1.2,5\n")
    code, out, err = cli("fetch", "--set", f"data.file={iso}")
    assert code == 0, err
    secs = tmp_path / "secs.csv.gz"
    with gzip.open(secs, "wt") as fh:
        fh.write("timestamp,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n")
    code, out, err = cli("fetch", "--set", f"data.file={secs}")
    assert code == 0, err
    assert "2024-01-01 00:00" in out, out


def test_train_without_data_says_fetch_first(tmp_path: Path) -> None:
    code, _, err = cli("train", "configs/quickstart.yaml", "--set", f"data.dir={tmp_path}",
                       "--set", "data.exchange=binance")
    assert code == 1 and "cryptonorm fetch" in err
    assert not (tmp_path / "binance").exists()  # nothing was downloaded behind the user's back


def test_config_show_prints_every_default() -> None:
    code, out, _ = cli("config", "show", "configs/quickstart.yaml", "--set", "model.norm=group")
    assert code == 0
    assert "norm: group" in out and "momentum:" in out and "fee_bps:" in out


def test_config_error_exit_code_two() -> None:
    code, _, err = cli("config", "validate", "configs/quickstart.yaml", "--set", "model.nrom=layer")
    assert code == 2 and "did you mean 'model.norm'" in err
