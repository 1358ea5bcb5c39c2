"""Resume of an interrupted train: the training state after every epoch, and every finished walk-forward fold.

RUN_DIR/resume.pt holds the last finished epoch's `TrainState.state_dict()` (model, optimizer, scheduler,
RNG states, history) and, in its meta, the fold it belongs to and the hash of the candles it trained on;
RUN_DIR/resume_folds.json the finished folds' test forecasts and records. Both go once run.json is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryptonorm.atomic import json_safe, write_text_atomic
from cryptonorm.config import Config
from cryptonorm.errors import CryptonormError, DataError, Hint
from cryptonorm.pipeline.rundir import RESUME_FOLDS, RESUME_STATE, RunDir, config_diff, resolved_paths


def resumable(run_dir: Path, cfg: Config, data_hash: str) -> bool:
    """Whether training `cfg` on candles of `data_hash` into `run_dir` would resume an interrupted run there:
    no run.json, a saved training state of those candles, the same config (RunDir.begin's rule). False
    for anything else, a damaged state or config included (a sweep cell then starts afresh)."""
    rd = RunDir(run_dir)
    if rd.finished or not rd.is_run or not rd.saved_state():
        return False
    try:
        if (rd / RESUME_STATE).exists():
            from cryptonorm.learn.checkpoints import load_train_state

            saved = load_train_state(rd / RESUME_STATE)[1].get("data_hash")
        else:
            saved = json.loads((rd / RESUME_FOLDS).read_text()).get("data_hash")
        return saved == data_hash and not config_diff(rd.config().to_dict(), resolved_paths(cfg).to_dict())
    except (CryptonormError, OSError, ValueError, AttributeError):  # damaged leftovers (a TrainingError or
        return False  # ConfigError from the readers, unreadable JSON or not a mapping): the caller removes them


class Checkpointer:
    """Saves and hands back the state of one run directory's training (fold 0 without walk-forward)."""

    def __init__(self, run_dir: Path, data_hash: str, resuming: bool) -> None:
        self.run_dir, self.data_hash, self.resuming = Path(run_dir), data_hash, resuming
        self.resumed = ""  # where training picked up, for the user ("" = from scratch)
        self.folds: list[dict[str, Any]] = self._read_folds() if resuming else []

    def state_for(self, fold: int) -> dict[str, Any] | None:
        """The saved training state of `fold`, or None to start it afresh."""
        from cryptonorm.learn.checkpoints import load_train_state

        path = self.run_dir / RESUME_STATE
        if not self.resuming or not path.exists():
            return None
        state, meta = load_train_state(path)
        self._check_hash(meta.get("data_hash"), path)
        if int(meta.get("fold", -1)) != fold:
            return None  # the state of an earlier fold, already finished
        self.resumed = f"after epoch {int(state['epoch'])}" + (f" of fold {fold}" if fold else "")
        return state

    def saver(self, fold: int) -> Callable[[Any], None]:
        """The `on_epoch_end` hook of `fold`: writes its state (atomically) after every epoch."""
        from cryptonorm.learn.checkpoints import save_train_state

        def save(state: Any) -> None:
            save_train_state(self.run_dir / RESUME_STATE, state.state_dict(),
                             {"fold": fold, "epoch": state.epoch, "data_hash": self.data_hash})
        return save

    def fold_done(self, record: dict[str, Any], test_idx: np.ndarray, forecasts: np.ndarray,
                  summary: dict[str, Any]) -> None:
        """Record a finished walk-forward fold (its test forecasts and how its training ended)."""
        self.folds.append({"record": record, "test_idx": test_idx.tolist(), "forecasts": forecasts.tolist(),
                           "summary": summary})
        write_text_atomic(self.run_dir / RESUME_FOLDS,
                          json.dumps(json_safe({"data_hash": self.data_hash, "folds": self.folds})))

    def finish(self) -> None:
        """The run is finished (run.json written): the resume files are not needed any more."""
        for name in (RESUME_STATE, RESUME_FOLDS):
            (self.run_dir / name).unlink(missing_ok=True)

    def _read_folds(self) -> list[dict[str, Any]]:
        path = self.run_dir / RESUME_FOLDS
        if not path.exists():
            return []
        try:
            saved = json.loads(path.read_text())
            folds: list[dict[str, Any]] = saved["folds"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read {path} to resume from ({e}); pass {{force}} to start over",
                            hints=(Hint.FORCE,)) from None
        self._check_hash(saved.get("data_hash"), path)
        if folds:
            self.resumed = f"after fold {len(folds) - 1}"
        return folds

    def _check_hash(self, saved: Any, path: Path) -> None:
        if saved != self.data_hash:
            raise DataError(f"the candles changed since the interrupted run in {self.run_dir} was saved "
                            f"({path.name}); pass {{force}} to start over on the new data", hints=(Hint.FORCE,))
