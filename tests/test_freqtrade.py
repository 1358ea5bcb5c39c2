"""freqtrade interop: its files read as data.file / data.freqtrade_dir, and the store written in its layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import build_config
from cryptonorm.data import freqtrade
from cryptonorm.data.importers import read_user_file
from cryptonorm.data.store import load_candles
from cryptonorm.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    """Real Binance BTC/USDT 1h candles, a short slice."""
    return read_user_file(DATA / "BTC_USDT-1h.csv.gz", "1h").iloc[-600:].reset_index(drop=True)


def freqtrade_frame(candles: pd.DataFrame) -> pd.DataFrame:
    """A frame as freqtrade's ohlcv_to_dataframe builds it: `date` from ms with pd.to_datetime(unit='ms',
    utc=True), then the float OHLCV columns (its DEFAULT_DATAFRAME_COLUMNS order)."""
    df = pd.DataFrame(candles[["timestamp", "open", "high", "low", "close", "volume"]].to_numpy(),
                      columns=["date", "open", "high", "low", "close", "volume"])
    df["date"] = pd.to_datetime(df["date"].astype("int64"), unit="ms", utc=True)
    return df.astype({c: "float64" for c in ("open", "high", "low", "close", "volume")})


def write_like_freqtrade(candles: pd.DataFrame, folder: Path, name: str, fmt: str) -> Path:
    """Save as freqtrade's data handlers do (feather: to_feather lz4; json: rows of [ms, o, h, l, c, v])."""
    folder.mkdir(parents=True, exist_ok=True)
    df = freqtrade_frame(candles)
    if fmt == "feather":
        path = folder / f"{name}.feather"
        df.reset_index(drop=True).loc[:, list(df.columns)].to_feather(path, compression_level=9, compression="lz4")
    elif fmt == "parquet":
        path = folder / f"{name}.parquet"
        df.to_parquet(path)
    else:
        out = df.copy()  # freqtrade's json handler writes `date` as epoch milliseconds
        out["date"] = (df["date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        text = json.dumps(out.values.tolist())
        path = folder / f"{name}.{'json.gz' if fmt == 'jsongz' else 'json'}"
        path.write_bytes(gzip.compress(text.encode()) if fmt == "jsongz" else text.encode())
    return path


@pytest.mark.parametrize("fmt", ["feather", "parquet", "json", "jsongz"])
def test_freqtrade_files_read_as_the_same_candles(btc: pd.DataFrame, tmp_path: Path, fmt: str) -> None:
    path = write_like_freqtrade(btc, tmp_path / "binance", "BTC_USDT-1h", fmt)
    got = read_user_file(path, "1h")
    pd.testing.assert_frame_equal(got, btc)


def test_freqtrade_dir_finds_spot_and_futures_files(btc: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "user_data" / "data" / "binance"
    write_like_freqtrade(btc, root, "BTC_USDT-1h", "feather")
    swap = btc.assign(close=btc["close"] * 1.001, high=btc["high"] * 1.001)
    write_like_freqtrade(swap, root / "futures", "BTC_USDT_USDT-1h-futures", "feather")
    spot_cfg = build_config({"data": {"freqtrade_dir": str(root), "symbol": "BTC/USDT", "timeframe": "1h"}})
    pd.testing.assert_frame_equal(load_candles(spot_cfg), btc)
    swap_cfg = build_config({"data": {"freqtrade_dir": str(root), "symbol": "BTC/USDT", "timeframe": "1h",
                                      "market": "swap"}})
    assert swap_cfg.data.symbols == ["BTC/USDT:USDT"]
    pd.testing.assert_frame_equal(load_candles(swap_cfg), swap)


def test_another_timeframe_is_named(btc: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "binance"
    write_like_freqtrade(btc, root, "BTC_USDT-1h", "feather")
    cfg = build_config({"data": {"freqtrade_dir": str(root), "symbol": "BTC/USDT", "timeframe": "4h"}})
    with pytest.raises(DataError, match=r"no freqtrade file for BTC/USDT 4h .*BTC_USDT-1h.feather.*another timeframe"):
        load_candles(cfg)
    # a file named for 4h whose candles are 1h apart is refused too
    wrong = write_like_freqtrade(btc, root, "BTC_USDT-4h", "feather")
    with pytest.raises(DataError, match="60 minutes apart, but data.timeframe is 4h"):
        read_user_file(wrong, "4h")


@pytest.mark.parametrize("fmt", ["feather", "json", "jsongz", "parquet"])
def test_write_round_trip(btc: pd.DataFrame, tmp_path: Path, fmt: str) -> None:
    path = freqtrade.write(btc, tmp_path, "BTC/USDT:USDT", "1h", fmt=fmt, candle_type="futures")
    assert path.relative_to(tmp_path).as_posix() == f"futures/BTC_USDT_USDT-1h-futures.{fmt.replace('gz', '.gz')}"
    pd.testing.assert_frame_equal(read_user_file(path, "1h"), btc)
    if fmt == "feather":  # freqtrade's own reader: pd.read_feather, `date` a UTC datetime column
        raw = pd.read_feather(path)
        assert list(raw.columns) == freqtrade.FT_COLUMNS and str(raw["date"].dt.tz) == "UTC"
        np.testing.assert_array_equal(raw["close"].to_numpy(), btc["close"].to_numpy())


def test_cli_fetch_reads_a_freqtrade_dir(btc: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "binance"
    write_like_freqtrade(btc, root, "ETH_USDT-1h", "json")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{freqtrade_dir: {root}, symbol: ETH/USDT, timeframe: 1h}}\n")
    r = CliRunner().invoke(app, ["fetch", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "600" in r.output
    bad = CliRunner().invoke(app, ["fetch", "-c", str(cfg), "--set", "data.file=x.csv"])
    assert bad.exit_code == 2 and "keep one" in bad.output


def test_cli_export_freqtrade_round_trip(btc: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "btc.csv"
    btc.to_csv(src, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{file: {src}, symbol: BTC/USDT, timeframe: 1h}}\n")
    out = tmp_path / "user_data" / "data" / "binance"
    r = CliRunner().invoke(app, ["export", str(cfg), "--freqtrade", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "BTC_USDT-1h.feather").is_file()
    back = build_config({"data": {"freqtrade_dir": str(out), "symbol": "BTC/USDT", "timeframe": "1h"}})
    pd.testing.assert_frame_equal(load_candles(back), btc)  # export, read back: identical candles
    for args in (["export", str(cfg)], ["export", str(cfg), "--freqtrade", str(out), "--onnx", "m.onnx"]):
        bad = CliRunner().invoke(app, args)
        assert bad.exit_code == 2 and "exactly one of --onnx FILE or --freqtrade DIR" in bad.output
    bad = CliRunner().invoke(app, ["export", str(cfg), "--freqtrade", str(out), "--format", "csv"])
    assert bad.exit_code == 2 and "feather, parquet, json, jsongz" in bad.output
