"""`cryptonorm runs`: what is in a folder of run directories, read from their files (no torch, no training)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptonorm.atomic import read_json_object
from cryptonorm.errors import ConfigError

MAX_DEPTH = 4  # runs/<name>, sweeps/<sweep>/cells/<cell>/run


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories (folders with a config.yaml) at or below `root`, sorted by path; a run's own
    sub-folders (backtest/) are not searched."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; pass a folder of runs (default: runs)")
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if (p / "config.yaml").is_file():
            found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return found


def run_row(run_dir: Path, root: Path | None = None) -> dict[str, Any]:
    """One run's summary: name, date, model, norm, target, test forecast metrics, Sharpe after costs, and
    whether its training finished (run.json is written last). Unreadable files give None fields."""
    cfg = _read_yaml(run_dir / "config.yaml")
    info = read_json_object(run_dir / "run.json")
    metrics = read_json_object(run_dir / "metrics.json") or {}
    bt = read_json_object(run_dir / "backtest" / "metrics.json") or {}
    model, target = cfg.get("model", {}), cfg.get("target", {})
    created = (info or {}).get("created") or datetime.fromtimestamp(
        (run_dir / "config.yaml").stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    test = metrics.get("test") or {}
    return {
        "name": str(run_dir.relative_to(root)) if root is not None and run_dir != root else run_dir.name,
        "path": str(run_dir),
        "created": created,
        "model": model.get("kind", "mlp"),
        "norm": model.get("norm", "layer"),
        "target": f"{target.get('kind', 'return')}/{target.get('horizon', 1)}",
        "test": {k: v for k, v in test.items() if isinstance(v, (int, float))},
        "sharpe": (bt.get("strategy") or {}).get("sharpe"),
        "buy_and_hold_sharpe": (bt.get("buy_and_hold") or {}).get("sharpe"),
        "finished": info is not None,
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """`run_row` of every run directory under `root`, oldest first."""
    root = Path(root)
    return sorted((run_row(p, root) for p in find_run_dirs(root)), key=lambda r: (r["created"], r["name"]))


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        out = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return out if isinstance(out, dict) else {}
