"""`cryptonorm runs`: what is in a folder of run directories, read from their files (no torch, no training)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptonorm.atomic import read_json_object
from cryptonorm.errors import ConfigError, CryptonormError
from cryptonorm.pipeline.rundir import BACKTEST_DIR, CONFIG, METRICS, RUN_JSON, RunDir

MAX_DEPTH = 4  # runs/<name>, sweeps/<sweep>/cells/<cell>/run


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories (folders with a config.yaml) at or below `root`, sorted by path; a run's own
    sub-folders (backtest/) are not searched."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; pass a folder of runs (default: runs)")
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if RunDir(p).is_run:
            found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return found


def run_row(run_dir: Path, root: Path | None = None) -> dict[str, Any]:
    """One run's summary: name, date, model, norm, target, test forecast metrics, Sharpe after costs, and
    whether its training finished (run.json is written last). A config.yaml that does not validate makes the
    run `damaged` (the reason; model, norm and target None): nothing is guessed. Unreadable metrics give None
    fields."""
    rd = RunDir(run_dir)
    damaged = None
    try:
        cfg = rd.config()
        model, norm, target = cfg.model.kind, cfg.model.norm, f"{cfg.target.kind}/{cfg.target.horizon}"
    except CryptonormError as e:
        damaged, model, norm, target = f"{CONFIG}: {str(e).splitlines()[0]}", None, None, None
    info = read_json_object(rd / RUN_JSON)
    metrics = read_json_object(rd / METRICS) or {}
    bt = read_json_object(rd / BACKTEST_DIR / METRICS) or {}
    created = (info or {}).get("created") or datetime.fromtimestamp(
        (rd / CONFIG).stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    test = metrics.get("test") or {}
    return {
        "name": str(run_dir.relative_to(root)) if root is not None and run_dir != root else run_dir.name,
        "path": str(run_dir),
        "created": str(created),
        "model": model,
        "norm": norm,
        "target": target,
        "test": {k: v for k, v in test.items() if isinstance(v, (int, float))} if isinstance(test, dict) else {},
        "sharpe": (bt.get("strategy") or {}).get("sharpe"),
        "buy_and_hold_sharpe": (bt.get("buy_and_hold") or {}).get("sharpe"),
        "finished": info is not None,
        "damaged": damaged,
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """`run_row` of every run directory under `root`, oldest first."""
    root = Path(root)
    return sorted((run_row(p, root) for p in find_run_dirs(root)), key=lambda r: (r["created"], r["name"]))
