"""RevIN sees a price-level shift (issue 23): with an input norm the scaler does not clip, so a RevIN model fed
the same candles at 10x the price forecasts the same returns, end to end through `cryptonorm predict --data`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.cli_run import cli

ROOT = Path(__file__).resolve().parents[1]
BTC_4H = ROOT.parent / "shared" / "data" / "BTC_USDT-4h.csv.gz"
runner = CliRunner()




def _config(tmp: Path, candles: Path, input_norm: str) -> Path:
    cfg = {
        "name": f"levels-{input_norm}", "seed": 0,
        "data": {"file": str(candles), "symbol": "BTC/USDT", "timeframe": "4h"},
        "features": {"window": 12, "inputs": "all", "returns": [1, 6], "volatility": [6], "volume_z": [6],
                     "sma": [10], "ema": [12], "bbands": [[10, 2.0]], "macd": [[6, 12, 4]]},
        "target": {"kind": "return", "horizon": 1},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "model": {"kind": "mlp", "norm": "layer", "hidden": [16], "input_norm": input_norm},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1, "device": "cpu"},
    }
    path = tmp / f"{input_norm}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A year of real BTC 4h candles (2021: 1.7x between its low and high), and the same at 10x the price."""
    tmp = tmp_path_factory.mktemp("levels")
    df = pd.read_csv(BTC_4H)
    df = df[(df["datetime"] >= "2021-01-01") & (df["datetime"] < "2022-01-01")]
    orig, x10 = tmp / "btc.csv", tmp / "btc_x10.csv"
    df.to_csv(orig, index=False)
    df.assign(**{c: df[c] * 10 for c in ("open", "high", "low", "close")}).to_csv(x10, index=False)
    return orig, x10


def _forecasts_on_both(tmp: Path, candles: tuple[Path, Path], input_norm: str) -> tuple[np.ndarray, np.ndarray]:
    run = tmp / input_norm
    code, _, err = cli("train", str(_config(tmp, candles[0], input_norm)), "--out", str(run))
    assert code == 0, err
    out = []
    for src in candles:
        dest = tmp / f"{input_norm}-{src.stem}.csv"
        code, _, err = cli("predict", str(run), "--data", str(src), "-o", str(dest))
        assert code == 0, err
        out.append(pd.read_csv(dest)["forecast"].to_numpy())
    return out[0], out[1]


@pytest.mark.slow
def test_revin_forecasts_are_invariant_to_the_price_level(tmp_path: Path, candles: tuple[Path, Path]) -> None:
    """RevIN normalizes each feature of each window by its own mean and sd, so an affine change of a feature
    (prices x10: close, SMA, ATR, MACD... scale by 10, returns and ratios stay) cancels, up to RevIN's eps
    (sqrt(var + 1e-5) in scaler units). That eps is what remains: a 12-bar window of a smooth level feature
    (SMA, EMA, Bollinger bands) varies by ~1e-5 in scaler units at 1x prices and 100x more at 10x, so the
    normalized windows differ by up to 0.5 there (by 4e-5, float32, without the eps). Measured (2021 BTC 4h,
    2165 bars): forecasts move by a median 1e-3 and at most 0.13 forecast sd; with the clip before RevIN
    (the issue-23 defect) they moved by up to 9 sd, and without RevIN they move by several sd (the control)."""
    same, x10 = _forecasts_on_both(tmp_path, candles, "revin")
    ok = np.isfinite(same)
    assert ok.sum() > 1500 and np.array_equal(ok, np.isfinite(x10))
    moved = np.abs(x10[ok] - same[ok]) / float(np.std(same[ok]))  # in forecast sd
    assert np.median(moved) <= 0.01 and moved.max() <= 0.3, (np.median(moved), moved.max())
    same, x10 = _forecasts_on_both(tmp_path, candles, "none")
    control = np.abs(x10[ok] - same[ok]) / float(np.std(same[ok]))
    assert np.median(control) > 0.2 and control.max() > 3, (np.median(control), control.max())
