"""Self-describing checkpoints: weights, model arguments and config; loaded with weights_only=True."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from cryptonorm.atomic import atomic_path
from cryptonorm.config import Config, ModelConfig
from cryptonorm.errors import Hint, PathError, TrainingError
from cryptonorm.learn.models import Forecaster, build_model

CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | Path,
    model: Forecaster,
    cfg: Config | ModelConfig,
    n_features: int,
    window: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the weights and a JSON meta dict (model config, shapes, target stats) atomically."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": m.model_dump(mode="json"),
        "n_features": int(n_features),
        "window": int(window),
        "out_dim": int(model.out_dim),
        "target": {"output": model.output, "mean": float(model.y_mean), "std": float(model.y_std)},
        "config": cfg.to_dict() if isinstance(cfg, Config) else None,
        "torch": torch.__version__,
        "extra": extra or {},
    }
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # metadata as a JSON string: readable without torch, and trivially safe for weights_only loading
        "meta": json.dumps(meta),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _save(payload, p)
    return p


def _save(payload: dict[str, Any], p: Path) -> None:
    """torch.save to `p` atomically. torch reports a failed write (a full disk) as a RuntimeError of its
    C++ writer: that becomes a PathError naming the file (an OSError names it already, in atomic_path)."""
    try:
        with atomic_path(p) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "write failed"
        raise PathError(f"{p}: cannot be written ({first}); the disk may be full: free some space or choose "
                        "another location") from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Forecaster, dict[str, Any]]:
    """Rebuild the model from a checkpoint alone (safe loading: weights_only=True); eval mode."""
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"checkpoint {str(p)!r} not found; train a model first or pass the right path")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
        meta: dict[str, Any] = json.loads(payload["meta"])
        m = ModelConfig.model_validate(meta["model"])
        model = build_model(m, meta["n_features"], meta["window"], meta["out_dim"])
        model.load_state_dict(payload["state_dict"])
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise TrainingError(f"cannot load checkpoint {str(p)!r}: {str(e).splitlines()[0] if str(e) else e!r}") from e
    model.output = meta["target"]["output"]
    model.to(map_location).eval()
    return model, meta


def save_train_state(path: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write a training state (`TrainState.state_dict()`) with a JSON-safe `meta` dict, atomically."""
    p = Path(path)
    _save({"format": CHECKPOINT_FORMAT, "meta": json.dumps(meta), "state": state}, p)
    return p


def load_train_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) written by `save_train_state` (safe loading: weights_only=True)."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
        return payload["state"], json.loads(payload["meta"])
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise TrainingError(f"cannot read the training state {str(p)!r} to resume from "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            "pass {force} to start over", hints=(Hint.FORCE,)) from e
