"""Shared by the end-to-end CLI tests (test_output, test_run_safety): the quickstart config cut small, the
CLI invoked in-process, and a module's candle store fetched once from the offline synthetic market."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import load_config

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
runner = CliRunner()
SMALL = {"train.epochs": 2, "model.hidden": [8], "train.threads": 1, "data.since": "2022-01-01",
         "data.until": "2022-03-01"}


def sets(d: dict[str, Any]) -> list[str]:
    """--set arguments for each key of `d` (values as JSON, so lists and numbers keep their types)."""
    return [a for k, v in d.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cryptonorm ARGS` (with `env` added to the environment); stdout and
    stderr are not terminals here, as in a pipe or a log. The one CLI helper of the tests."""
    r = runner.invoke(app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def fetch_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh store with the quickstart market's 2022-01 .. 2022-03 candles."""
    d = tmp_path_factory.mktemp("store")
    pipeline.fetch(load_config(QUICK, ["data.since=2022-01-01", "data.until=2022-04-01", f"data.dir={d}"]))
    return d
