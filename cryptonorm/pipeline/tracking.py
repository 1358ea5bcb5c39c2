"""Experiment tracking (optional extra `track`): a finished run directory logged to MLflow or TensorBoard.

What a run directory holds is what is logged, read from its files once the run is done (so a sweep's
cells, trained in worker processes, are logged the same way by the parent):
  params     the flattened config (`model.norm`, `train.lr`, ...)
  metrics    per epoch (step = epoch): train_loss, val_loss, lr (history.csv); final: val.* and test.*
             forecast metrics (metrics.json), bt.* strategy and bh.* buy-and-hold backtest metrics
  artifacts  config.yaml, metrics.json, backtest/metrics.json, backtest/equity.png
MLflow: one run per run directory, under an experiment named after the config (or the sweep); tracking
URI from MLFLOW_TRACKING_URI, else the SQLite store ./mlruns.db (`mlflow ui --backend-store-uri
sqlite:///mlruns.db` shows it). TensorBoard: event files in
CRYPTONORM_TENSORBOARD_DIR (default ./tensorboard)/<experiment>/<run name>/.
A run already logged with the same files is not logged twice (a resumed sweep logs only what changed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptonorm.atomic import read_json_object
from cryptonorm.errors import ConfigError, CryptonormError

BACKENDS = ("mlflow", "tensorboard")
EXTRA = "pip install 'cryptonorm[track]'"
EPOCH_COLUMNS = ("train_loss", "val_loss", "lr")
ARTIFACTS = ("config.yaml", "metrics.json", "backtest/metrics.json", "backtest/equity.png")


def check_backend(backend: str | None) -> str | None:
    """The backend name, checked before any work: unknown or not installed -> ConfigError (exit 2)."""
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise ConfigError(f"--track {backend!r} is not a tracking backend; use mlflow or tensorboard")
    module = "mlflow" if backend == "mlflow" else "tensorboard"
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"--track {backend} needs the {module} package: {EXTRA}") from None
    return backend


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_record(run_dir: Path) -> dict[str, Any]:
    """Everything logged for one run directory: params, epoch metrics, final metrics, artifact paths."""
    import pandas as pd
    import yaml

    run_dir = Path(run_dir)
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v
              for k, v in flatten(yaml.safe_load((run_dir / "config.yaml").read_text())).items()}
    history = pd.read_csv(run_dir / "history.csv") if (run_dir / "history.csv").exists() else pd.DataFrame()
    epochs = {c: [(int(e), float(v)) for e, v in zip(history["epoch"], history[c], strict=True) if _finite(v)]
              for c in EPOCH_COLUMNS if c in history}
    final: dict[str, float] = {}
    metrics = read_json_object(run_dir / "metrics.json") or {}
    for split in ("val", "test"):
        final.update({f"{split}.{k}": float(v) for k, v in (metrics.get(split) or {}).items() if _finite(v)})
    bt = read_json_object(run_dir / "backtest" / "metrics.json") or {}
    final.update({f"bt.{k}": float(v) for k, v in (bt.get("strategy") or {}).items() if _finite(v)})
    final.update({f"bh.{k}": float(v) for k, v in (bt.get("buy_and_hold") or {}).items() if _finite(v)})
    files = [run_dir / a for a in ARTIFACTS if (run_dir / a).is_file()]
    return {"params": params, "epochs": epochs, "final": final, "artifacts": files, "key": _key(run_dir)}


def log_runs(backend: str, experiment: str, runs: Iterable[tuple[str, Path]]) -> int:
    """Log each (run name, run directory) under `experiment`; returns how many were logged (new).
    A tracker that refuses (unreachable server, a store MLflow will not open) is a TrackingError."""
    check_backend(backend)
    log = _log_mlflow if backend == "mlflow" else _log_tensorboard
    try:
        return sum(log(experiment, name, run_record(path)) for name, path in runs)
    except (OSError, ValueError) as e:
        raise TrackingError(f"--track {backend}: {_first_line(e)}") from e
    except Exception as e:
        if type(e).__module__.startswith(("mlflow", "tensorboard")):
            raise TrackingError(f"--track {backend}: {_first_line(e)}") from e
        raise


class TrackingError(CryptonormError):
    """The tracker refused what was logged (exit 1); the run directory itself is complete."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------- backends


MLFLOW_DB = "mlruns.db"  # the default MLflow store: a SQLite file in the working directory


def mlflow_uri() -> str:
    """MLFLOW_TRACKING_URI if set (any store MLflow supports: sqlite:///..., http://..., a file store), else
    a SQLite store ./mlruns.db: what MLflow 3 recommends (its ./mlruns file store is deprecated and needs
    MLFLOW_ALLOW_FILE_STORE)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(MLFLOW_DB).resolve()}"


def logged_note(backend: str, experiment: str) -> str:
    """The line printed after logging: where it went and how to look at it."""
    if backend == "mlflow":
        uri = mlflow_uri()
        see = f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
        return f"logged to mlflow (experiment {experiment}, store {uri}); see it with: {see}"
    return f"logged to tensorboard (experiment {experiment}); see it with: tensorboard --logdir {tensorboard_dir()}"


def _log_mlflow(experiment: str, name: str, rec: dict[str, Any]) -> bool:
    import time

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri())
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    if client.search_runs([exp_id], filter_string=f"tags.`cryptonorm.key` = '{rec['key']}'", max_results=1):
        return False
    run_id = client.create_run(exp_id, run_name=name, tags={"cryptonorm.key": rec["key"]}).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, e) for k, pts in rec["epochs"].items() for e, v in pts]
    metrics += [Metric(k, v, now, 0) for k, v in rec["final"].items()]
    params = [Param(k, str(v)[:6000]) for k, v in rec["params"].items()]
    for i in range(0, max(len(metrics), len(params)), 100):  # MLflow's batch limits: 1000 metrics, 100 params
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100],
                         tags=[RunTag("cryptonorm.run_dir", str(rec["artifacts"][0].parent))] if i == 0 and
                         rec["artifacts"] else [])
    for path in rec["artifacts"]:
        client.log_artifact(run_id, str(path), artifact_path="backtest" if path.parent.name == "backtest" else None)
    client.set_terminated(run_id)
    return True


def tensorboard_dir() -> Path:
    """CRYPTONORM_TENSORBOARD_DIR if set, else ./tensorboard."""
    return Path(os.environ.get("CRYPTONORM_TENSORBOARD_DIR") or "tensorboard")


def _log_tensorboard(experiment: str, name: str, rec: dict[str, Any]) -> bool:
    from torch.utils.tensorboard import SummaryWriter

    log_dir = tensorboard_dir() / experiment / name
    marker = log_dir / ".cryptonorm-key"
    if marker.exists() and marker.read_text() == rec["key"]:
        return False
    with SummaryWriter(log_dir=str(log_dir)) as w:
        for k, pts in rec["epochs"].items():
            for epoch, v in pts:
                w.add_scalar(k, v, epoch)
        for k, v in rec["final"].items():
            w.add_scalar(k, v, 0)
        w.add_text("params", "\n".join(f"    {k} = {v}" for k, v in rec["params"].items()))
        for path in rec["artifacts"]:
            if path.suffix == ".png":
                from matplotlib.image import imread

                w.add_image(path.stem, imread(path)[..., :3], 0, dataformats="HWC")
            else:
                w.add_text(str(path.relative_to(path.parent.parent if path.parent.name == "backtest" else path.parent)),
                           "    " + path.read_text().replace("\n", "\n    "))
    marker.write_text(rec["key"])
    return True


# ---------------------------------------------------------------- helpers


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _key(run_dir: Path) -> str:
    """Identifies a run directory and the content of what is logged: a changed backtest logs again."""
    h = hashlib.sha256(str(run_dir.resolve()).encode())
    for name in ("run.json", "metrics.json", "backtest/metrics.json"):
        p = run_dir / name
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()[:16]
