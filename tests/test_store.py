"""The candle store under concurrency and kills: never corrupt, never a lost row."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptonorm.data.candles import COLUMNS, clean, find_gaps, gap_flags
from cryptonorm.data.store import add_page, consolidate, read_store, write_atomic
from cryptonorm.errors import DataError


def frame(start: int, n: int, step: int = 3_600_000, price: float = 100.0) -> pd.DataFrame:
    ts = start + np.arange(n, dtype=np.int64) * step
    c = price + np.arange(n, dtype="float64")
    return pd.DataFrame({"timestamp": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0})


def _writer(path: str, worker: int, rounds: int) -> None:
    rng = np.random.default_rng(worker)
    for _ in range(rounds):
        start = int(rng.integers(0, 400)) * 3_600_000
        add_page(Path(path), frame(start, int(rng.integers(1, 60))))
        consolidate(Path(path))


def test_concurrent_writers_never_lose_rows(tmp_path: Path) -> None:
    path = tmp_path / "x" / "BTC_USDT-1h.parquet"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    # the expected union, recomputed from the same seeds
    expected: set[int] = set()
    for w in range(4):
        rng = np.random.default_rng(w)
        for _ in range(15):
            start = int(rng.integers(0, 400))
            expected.update(range(start, start + int(rng.integers(1, 60))))
    df = read_store(path)
    assert set((df["timestamp"] // 3_600_000).tolist()) == expected
    assert df["timestamp"].is_unique and df["timestamp"].is_monotonic_increasing
    assert not list(path.parent.glob("*.tmp"))  # no temp file left behind


def test_a_page_survives_its_journal_folder_vanishing_before_the_write(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the concurrent-writers test hit once in CI: a consolidation in another process removed the
    empty journal folder between add_page's mkdir and its temp file. Replayed deterministically here."""
    import tempfile

    import cryptonorm.atomic as atomic

    path = tmp_path / "BTC_USDT-1h.parquet"
    real = tempfile.mkstemp
    calls = {"n": 0}

    def vanishing_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        calls["n"] += 1
        if calls["n"] == 1:  # what the other process's consolidate does at that moment
            os.rmdir(kwargs["dir"])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic.tempfile, "mkstemp", vanishing_mkstemp)
    add_page(path, frame(0, 5))
    assert calls["n"] == 2  # failed once, written on the retry
    monkeypatch.undo()
    assert len(consolidate(path)) == 5


def test_kill_during_writes_leaves_old_or_new_file(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_atomic(frame(0, 10), path)
    script = (  # noqa: UP031 - a literal program text
        "import numpy as np, pandas as pd; from pathlib import Path\n"
        "from cryptonorm.data.store import write_atomic\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1; n = 10 + 5000 * (i %% 2); c = np.arange(n, dtype='float64') + 100\n"
        "    df = pd.DataFrame({'timestamp': np.arange(n) * 3600000, 'open': c, 'high': c + 1, 'low': c - 1,"
        " 'close': c, 'volume': 1.0})\n"
        "    write_atomic(df, Path(%r))\n"
    ) % str(path)
    rng = np.random.default_rng(0)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(0.6 + float(rng.random()) * 0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        df = read_store(path)  # raises DataError if the file were half-written
        assert len(df) in (10, 5010)
    for tmp in path.parent.glob(".s.parquet.*.tmp"):  # orphaned temp files may remain; the store is intact
        os.unlink(tmp)


def test_damaged_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="unreadable"):
        read_store(path)
    assert path.read_bytes() == b"PAR1 this is not parquet"


def test_clean_sorts_dedups_and_drops_invalid_rows() -> None:
    df = pd.concat([frame(3_600_000, 3), frame(0, 2)], ignore_index=True)
    df.loc[0, "close"] = np.nan
    out = clean(df, "1h")
    assert list(out.columns) == COLUMNS
    assert out["timestamp"].tolist() == [0, 3_600_000, 7_200_000, 10_800_000]


def test_gaps_are_found_not_filled() -> None:
    ts = np.array([0, 1, 2, 5, 6, 10], dtype=np.int64) * 3_600_000
    gaps = find_gaps(ts, "1h")
    assert [(g.after // 3_600_000, g.missing) for g in gaps] == [(2, 2), (6, 3)]
    assert gap_flags(ts, "1h").tolist() == [False, False, False, True, False, True]
