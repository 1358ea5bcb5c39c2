"""Issue 24: data that is silently wrong never reaches training. Each case fails today's code (7436cf5) and is
refused here in one line naming the file and what to do; real files in tmp_path, real shared data sliced small."""

from __future__ import annotations

import os
from pathlib import Path

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
