"""Issue 24: data that is silently wrong never reaches training. Each case fails today's code (7436cf5) and is
refused here in one line naming the file and what to do; real files in tmp_path, real shared data sliced small."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptonorm.data.funding import read_funding_file
from cryptonorm.data.importers import MAX_FILE_BYTES, read_user_file
from cryptonorm.errors import DataError

H = "timestamp,open,high,low,close,volume\n"


def test_a_time_format_reads_day_first_dates_as_written(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(H + "".join(f"03/01/2022 {h:02d}:00,100,110,90,105,5\n" for h in range(3)))
    got = read_user_file(path, "1h", "%d/%m/%Y %H:%M")
    want = pd.date_range("2022-01-03", periods=3, freq="h", tz="UTC").as_unit("ms").asi8
    assert got["timestamp"].tolist() == want.tolist()  # 3 January, not 1 March
    with pytest.raises(DataError, match="may be day/month or month/day"):
        read_user_file(path, "1h")


def test_a_funding_file_with_day_first_dates_needs_the_format(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("timestamp,rate\n" + "".join(f"{d:02d}/02/2022 08:00,0.0001\n" for d in (1, 2, 3)))
    with pytest.raises(DataError, match=r"data.funding_file .* may be day/month"):
        read_funding_file(path)
    got = read_funding_file(path, "%d/%m/%Y %H:%M")
    assert pd.to_datetime(got["timestamp"], unit="ms").dt.day.tolist() == [1, 2, 3]


def test_a_file_too_big_for_memory_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with open(path, "wb") as f:  # sparse: takes no disk space, and no read would finish quickly
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match=r"huge.csv' is 2.0 GB, above the 2 GB .* cut it"):
        read_user_file(path, "1h")
    gz = tmp_path / "huge.csv.gz"
    os.link(path, gz)
    with pytest.raises(DataError, match=r"above the 0.5 GB"):
        read_user_file(gz, "1h")


def test_a_damaged_parquet_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pd.DataFrame({"timestamp": [1], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0],
                  "volume": [1.0]}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20] + b"\0" * 20)
    with pytest.raises(DataError, match=r"c.parquet' cannot be read as parquet .* damaged .* export it again"):
        read_user_file(path, "1h")


# ---------------------------------------------------------------- funding coverage (a swap's second series)

PANEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "panel"
ROOT = Path(__file__).resolve().parents[1]


def _swap_files(tmp_path: Path, cut: Callable[[pd.DataFrame], pd.DataFrame]) -> list[str]:
    """--set options of a swap trained on real BTC perpetual candles (2024-01 .. 2024-04) and real funding
    rates edited by `cut`."""
    candles = pd.read_csv(PANEL / "BTC_USDT_USDT-1h-futures.csv.gz")
    candles = candles[(candles["timestamp"] >= 1_704_067_200_000) & (candles["timestamp"] < 1_711_929_600_000)]
    rates = pd.read_csv(PANEL / "BTC_USDT_USDT-funding.csv.gz")
    rates = rates[(rates["timestamp"] >= 1_703_980_800_000) & (rates["timestamp"] < 1_712_016_000_000)]
    candles.drop(columns="datetime").to_csv(tmp_path / "perp.csv", index=False)
    cut(rates.drop(columns="datetime").reset_index(drop=True)).to_csv(tmp_path / "funding.csv", index=False)
    over = {"data.file": str(tmp_path / "perp.csv"), "data.funding_file": str(tmp_path / "funding.csv"),
            "data.market": "swap", "data.exchange": "binance", "train.epochs": 1, "model.hidden": [8],
            "train.threads": 1, "features.window": 8, "data.since": "2024-01-01", "data.until": "2024-04-01"}
    return [a for k, v in over.items() for a in ("--set", f"{k}={v}" if isinstance(v, str) else f"{k}={v}")]


def _train(tmp_path: Path, options: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from cryptonorm.cli import app

    r = CliRunner().invoke(app, ["-q", "train", str(ROOT / "configs" / "quickstart.yaml"), *options,
                                 "--out", str(tmp_path / "run")])
    return r.exit_code, r.stderr


def test_funding_that_ends_months_before_the_candles_is_refused_before_training(tmp_path: Path) -> None:
    # the rates end 2024-01-31: July's-value-for-months, as in the issue (features would carry the last rate)
    code, err = _train(tmp_path, _swap_files(tmp_path, lambda r: r[r["timestamp"] < 1_706_745_600_000]))
    assert code == 1, err
    line, = err.strip().splitlines()
    assert "funding.csv': funding rates end 2024-01-31 16:00: 181 funding time(s) missing at the end" in line
    assert "the candles run 2024-01-01 00:00 -> 2024-04-01 00:00" in line
    assert not (tmp_path / "run").exists()


def test_a_hole_of_100_funding_times_inside_is_refused_not_filled_over(tmp_path: Path) -> None:
    code, err = _train(tmp_path, _swap_files(tmp_path, lambda r: r.drop(index=range(100, 200))))
    assert code == 1, err
    line, = err.strip().splitlines()
    assert "100 funding time(s) missing inside the candles' span (1 gap(s) of more than 3, the longest 100 after" \
        in line and "never filled over" in line


def test_coverage_rule_against_a_plain_loop() -> None:
    """check_coverage refuses exactly when a plain walk over the 8 h grid finds a run of more than
    SKIPPED_SETTLEMENTS missing times inside the bars, or the grid is missing at either end."""
    from cryptonorm.data.funding import SKIPPED_SETTLEMENTS, check_coverage

    step, eight = 3_600_000, 8 * 3_600_000
    bars = np.arange(0, 200 * step, step, dtype="int64") + 10 * eight
    grid = np.arange(0, 40 * eight, eight, dtype="int64")
    rng = np.random.default_rng(0)
    outcomes = []
    for trial in range(500):
        keep = np.ones(len(grid), dtype=bool)
        a = int(rng.integers(0, len(grid)))
        keep[a:a + int(rng.integers(0, 8))] = False
        fts = grid[keep]
        closes = (int(bars[0]) + step, int(bars[-1]) + step)
        run, worst = 0, 0  # the longest run of missing grid times inside the span, by a plain loop
        for t, kept in zip(grid, keep, strict=True):
            run = run + 1 if not kept and closes[0] - eight < t <= closes[1] else 0
            worst = max(worst, run)
        ends = not (fts[0] - closes[0] < eight and closes[1] - fts[-1] < eight)
        refused = ends or worst > SKIPPED_SETTLEMENTS
        try:
            check_coverage(pd.DataFrame({"timestamp": fts, "rate": 1e-4}), bars, step, "f")
            got = False
        except DataError:
            got = True
        assert got == refused, (trial, a, worst, ends)
        outcomes.append(got)
    assert 100 < sum(outcomes) < 400  # both answers were put to the test


def test_a_target_flat_on_the_training_split_only_is_refused_by_the_split() -> None:
    """Real BTC candles whose first 1,300 bars are made flat: the whole target varies, the training split's
    does not (the train-time check before the run dir sees all samples; the split sees the train part)."""
    from cryptonorm.config import load_config
    from cryptonorm.features import dataset, splits

    candles = pd.read_csv(ROOT.parent / "shared" / "data" / "BTC_USDT-1h.csv.gz").iloc[-1800:].reset_index(drop=True)
    candles = candles.drop(columns="datetime")
    candles.loc[:1299, ["open", "high", "low", "close"]] = 100.0
    # no RSI or Bollinger bands: on flat prices they are 0/0, and those rows would not be samples at all
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["data.file=x.csv", "features.rsi=[]",
                                                            "features.bbands=[]"])
    prep = dataset.prepare(candles, cfg)
    splits.check_target_varies(prep, np.flatnonzero(prep.valid))  # the whole series moves: accepted
    with pytest.raises(DataError, match=r"the return target is 0 on all [\d,]+ training samples \(zero variance"):
        splits.split(prep, cfg)


def test_an_unreadable_journal_page_is_set_aside_with_a_note_in_the_fetch_output(tmp_path: Path) -> None:
    """Issue 23 item 7: the page is renamed .unreadable (never deleted), and fetch says so, even with -q."""
    from typer.testing import CliRunner

    from cryptonorm.cli import app
    from cryptonorm.data.store import journal_dir

    quick = str(ROOT / "configs" / "quickstart.yaml")
    opts = ["-c", quick, "--set", "data.since=2022-01-01", "--set", "data.until=2022-01-10", "--set",
            f"data.dir={tmp_path / 'store'}"]
    runner = CliRunner()
    assert runner.invoke(app, ["fetch", *opts]).exit_code == 0
    path = next((tmp_path / "store").rglob("BTC_USDT-1h.parquet"))
    journal_dir(path).mkdir()
    page = journal_dir(path) / "001641000000000.1.abc.parquet"
    page.write_bytes(b"PAR1 half a page")
    r = runner.invoke(app, ["-q", "fetch", *opts])
    assert r.exit_code == 0, r.stderr
    line, = r.stderr.strip().splitlines()
    assert line.startswith("note: 1 downloaded page(s) for ") and "001641000000000.1.abc.unreadable" in line
    assert "rows are missing from the store" in line
    assert (journal_dir(path) / "001641000000000.1.abc.unreadable").read_bytes() == b"PAR1 half a page"
    again = runner.invoke(app, ["fetch", *opts])  # said again while the page sits there
    assert again.exit_code == 0 and "1 downloaded page(s)" in again.stderr


def test_a_failed_cell_line_shows_the_message_not_the_class() -> None:
    """Issue 24: sweep progress lines and results said 'TrainingError: ...'; a project error is its message
    (a bug in the code keeps its class, which is what a bug report needs)."""
    from cryptonorm.errors import DataError, TrainingError
    from cryptonorm.sweeps.cell import one_line

    assert one_line(TrainingError("the loss is NaN at epoch 3; lower train.lr\nmore")) == \
        "the loss is NaN at epoch 3; lower train.lr"
    assert one_line(DataError("no candles")) == "no candles"
    assert one_line(RuntimeError("boom")) == "RuntimeError: boom"
