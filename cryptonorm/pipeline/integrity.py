"""Run integrity: the SHA-256 of the files a run's later steps read, recorded in run.json and checked.

A model.pt copied in from another run, an edited config.yaml or scaler.json, or forecasts.csv changed by hand
would otherwise give different forecasts or backtests without a word.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptonorm.config.tabular import BOOSTER_FILE, MODEL_FILE
from cryptonorm.errors import DataError
from cryptonorm.pipeline.rundir import CONFIG, FORECASTS, MODEL, RUN_JSON, SCALER, RunDir

# what run.json records (MODEL_FILE / BOOSTER_FILE: a ridge / LightGBM run's model, learn/tabular.py)
CHECKED = (MODEL, MODEL_FILE, BOOSTER_FILE, SCALER, CONFIG, FORECASTS)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(run_dir: Path) -> dict[str, str]:
    """{name: sha256} of the CHECKED files that exist in the run directory (for run.json)."""
    return {name: sha256(run_dir / name) for name in CHECKED if (run_dir / name).is_file()}


def verify_run(run_dir: Path, names: Sequence[str] = CHECKED) -> None:
    """DataError (exit 1) naming the first of `names` whose SHA-256 differs from the one run.json recorded.

    Runs trained before hashes were recorded have none to check against and pass.
    """
    RunDir(run_dir).verify(names)


def verify_hashes(run_dir: Path, recorded: Mapping[str, str], names: Sequence[str] = CHECKED) -> None:
    """DataError naming the first of `names` whose SHA-256 differs from `recorded` (those not recorded pass)."""
    for name in names:
        want = recorded.get(name)
        if want is None:
            continue
        path = Path(run_dir) / name
        if not path.is_file():
            raise DataError(f"{path} is missing; the run is incomplete: train it again")
        if sha256(path) != want:
            raise DataError(f"{path} is not the file this run was trained with (its SHA-256 differs from the one "
                            f"in {RUN_JSON}): it was replaced or edited; restore the original or train again")


def record_file(run_dir: Path, name: str) -> None:
    """Record the current SHA-256 of RUN_DIR/`name` in run.json: for a deliberate change made by cryptonorm
    itself (a sweep re-backtest writing a cell's new backtest settings into its config.yaml)."""
    from cryptonorm.atomic import write_json

    path = Path(run_dir) / RUN_JSON
    info = RunDir(run_dir).info()
    if isinstance(info.get("files"), dict):
        info["files"][name] = sha256(Path(run_dir) / name)
        write_json(path, info)
