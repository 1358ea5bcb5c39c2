"""Issue 24: a wrong argument type at the notebook API is one ConfigError naming the argument and what it takes
(like the CLI), never an AttributeError/TypeError traceback from deep inside, and never a Python class name."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import cryptonorm as cn
from cryptonorm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
SWEEP = str(ROOT / "configs" / "sweeps" / "norms.yaml")

# id, the call, what the one-line message must say
CASES: list[tuple[str, Callable[[], Any], list[str]]] = [
    ("overrides-as-a-list", lambda: cn.load_config(QUICK, ["train.epochs=2"]),  # type: ignore[arg-type]
     ["overrides must be a mapping", "a list of 1 item(s)", "{'key': value}"]),
    ("override-key-not-text", lambda: cn.load_config(QUICK, {3: 1}), ["keys are dotted names", "the number 3"]),
    ("int-config-path", lambda: cn.load_config(5), ["path must be a path", "the number 5"]),  # type: ignore[arg-type]
    ("dict-to-fetch", lambda: cn.fetch({"exchange": "binance"}),  # type: ignore[arg-type]
     ["cfg must be a Config or the path of a config file, got a mapping", "cn.fetch(exchange="]),
    ("int-config-to-train", lambda: cn.train(7), ["cfg must be a Config", "the number 7"]),  # type: ignore[arg-type]
    ("int-out-to-train", lambda: cn.train(QUICK, out=3), ["out must be a path", "the number 3"]),  # type: ignore[arg-type]
    ("candles-as-a-list", lambda: cn.train(QUICK, candles=[1, 2]),  # type: ignore[arg-type]
     ["candles must be a pandas DataFrame", "a list of 2"]),
    ("unknown-tracker", lambda: cn.train(QUICK, track=1),  # type: ignore[arg-type]
     ["track must be one of 'mlflow', 'tensorboard'", "the number 1"]),
    ("jobs-as-text", lambda: cn.sweep(SWEEP, jobs="two"),  # type: ignore[arg-type]
     ["jobs must be a whole number >= 1", "the text 'two'"]),
    ("jobs-zero", lambda: cn.sweep(SWEEP, jobs=0), ["jobs must be >= 1, got 0"]),
    ("sweep-overrides-as-a-list", lambda: cn.sweep(SWEEP, overrides=["a=1"]),  # type: ignore[arg-type]
     ["overrides must be a mapping"]),
    ("executor-unknown", lambda: cn.sweep(SWEEP, executor="dask"), ["executor must be one of 'local', 'ray'"]),
    ("int-sweep-path", lambda: cn.sweep(42), ["path must be a path", "the number 42"]),  # type: ignore[arg-type]
    ("int-run-to-backtest", lambda: cn.backtest(5),  # type: ignore[arg-type]
     ["run must be a Run (from cn.train or cn.load_run) or a run directory", "the number 5"]),
    ("write-as-text", lambda: cn.backtest("runs/x", write="no"),  # type: ignore[arg-type]
     ["write must be True or False", "the text 'no'"]),
    ("split-as-a-number", lambda: cn.backtest("runs/x", split=1),  # type: ignore[arg-type]
     ["split must be 'test' or 'val'", "the number 1"]),
    ("none-run-dir", lambda: cn.load_run(None), ["run_dir must be a path", "None"]),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("case", "call", "says"), [pytest.param(*c, id=c[0]) for c in CASES])
def test_a_wrong_argument_is_one_clear_project_error(case: str, call: Callable[[], Any], says: list[str],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    for s in says:
        assert s in msg, (s, msg)
    # what was given is said in words: no class or exception names, no Python internals
    assert not re.search(r"Error|NoneType|<class|object has no|'(dict|int|str|list)' object", msg), msg
    assert not any(tmp_path.iterdir())  # refused before any work


def test_right_arguments_still_work(tmp_path: Path) -> None:
    cfg = cn.load_config(Path(QUICK), {"train.epochs": 1})
    assert cfg.train.epochs == 1
    frame = cn.fetch(QUICK, since="2022-01-01", until="2022-01-03", dir=str(tmp_path / "store"))
    assert isinstance(frame, pd.DataFrame) and len(frame) == 48
