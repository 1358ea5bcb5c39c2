"""The tabular model kinds: ridge (linear / logistic) and LightGBM on the flattened feature window.

A sample is the window of scaled features ending at row t, the same window the networks see
(`X[t-W+1 .. t]`, (W, F)); a tabular model reads its last `lags` bars flattened into one row of L x F
columns, oldest bar first (`design`). No torch here: numpy, scipy, and LightGBM imported lazily.

Targets (the pipeline hands `fit` the label on the scale to fit, see pipeline/fitting.py):
    regression (return; volatility on log variance): the target standardized with the training rows'
        mean and std (as the networks do), ridge or LightGBM's L2 objective; forecasts on the target's scale.
    binary (direction): logistic regression (ridge kind) or LightGBM's binary objective; P(up).
    link "log" (volatility): fitted on log(var); the forecast variance is exp(f + s^2 / 2), s^2 the
        residual variance of log(var) on the validation rows (training rows without a validation split):
        the log-normal bias correction, as for the log-HAR baseline (evaluate/vol_baselines.py).

Saved as MODEL_FILE (JSON: kind, shapes, standardization, ridge coefficients) and, for LightGBM, BOOSTER_FILE
(the booster's own text model); never pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryptonorm.atomic import atomic_path, write_json
from cryptonorm.config import ModelConfig
from cryptonorm.config.tabular import BOOSTER_FILE, GBM_INSTALL, IMPORTANCE_FILE, MODEL_FILE
from cryptonorm.errors import ConfigError, TrainingError
from cryptonorm.learn import linear

__all__ = ["BOOSTER_FILE", "IMPORTANCE_FILE", "MODEL_FILE", "TabularFit", "TabularModel", "design", "fit", "load",
           "save"]
FORMAT = 1
CHUNK = 8192  # rows of the design built at once (the full (n, L x F) matrix is never needed by ridge)


# ---------------------------------------------------------------- the design matrix


def lag_offsets(lags: int) -> np.ndarray:
    """(L,) row offsets of the bars a sample reads, oldest first: -L+1 .. 0."""
    return np.arange(-lags + 1, 1, dtype=np.int64)


def design(X: np.ndarray, idx: np.ndarray, lags: int, dtype: Any = np.float32) -> np.ndarray:
    """(n, L x F) rows of the windows ending at rows idx: X[t-L+1 .. t] flattened, oldest bar first."""
    rows = np.asarray(idx, dtype=np.int64)[:, None] + lag_offsets(lags)  # (n, L)
    return np.asarray(X[rows], dtype=dtype).reshape(len(rows), -1)  # (n, L, F) -> (n, L*F)


def design_names(features: list[str], lags: int) -> tuple[list[str], list[int]]:
    """Feature name and lag (0 = the window's last bar) of each design column, in `design`'s order."""
    names = [f for _ in range(lags) for f in features]
    lag = [lags - 1 - b for b in range(lags) for _ in features]
    return names, lag


def _chunks(X: np.ndarray, idx: np.ndarray, lags: int, y: np.ndarray | None = None,
            dtype: Any = np.float64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    X = np.asarray(X, dtype=dtype)  # once (N, F), not per chunk of (b, L, F)
    for a in range(0, len(idx), CHUNK):
        rows = idx[a:a + CHUNK]
        yield design(X, rows, lags, dtype), (y[a:a + CHUNK] if y is not None else np.empty(0))


# ---------------------------------------------------------------- the model


@dataclass
class TabularModel:
    """A fitted ridge or LightGBM forecaster and what turns its score into a forecast."""

    kind: str  # ridge | lightgbm
    objective: str  # regression | binary
    link: str  # identity | log (fitted on log of the label; forecasts exp(f + resid_var / 2))
    lags: int
    n_features: int
    window: int
    y_mean: float = 0.0  # regression: the fitted target was (t - y_mean) / y_std, t = link(label)
    y_std: float = 1.0
    resid_var: float = 0.0  # link log: variance of log(label) - f on held-out rows (log-normal correction)
    coef: np.ndarray | None = None  # ridge: (L*F,)
    intercept: float = 0.0
    booster: Any = None  # lightgbm.Booster
    best_iteration: int = 0  # lightgbm: boosting rounds kept

    def score(self, A: np.ndarray) -> np.ndarray:
        """(n,) the model's raw output for design rows A: standardized target, or the log-odds / P(up)."""
        if self.kind == "ridge":
            assert self.coef is not None
            return np.asarray(A, dtype=np.float64) @ self.coef + self.intercept
        return np.asarray(self.booster.predict(A, num_iteration=self.best_iteration or None), dtype=np.float64)

    def predict(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(len(idx),) forecasts of the windows ending at rows idx: P(up) for binary; else the label's units."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            return np.empty(0, dtype=np.float64)
        if idx.min() < self.lags - 1 or idx.max() >= len(X):
            raise ValueError(f"idx must hold END rows in [{self.lags - 1}, {len(X) - 1}]")
        s = np.concatenate([self.score(A) for A, _ in _chunks(X, idx, self.lags, dtype=self._dtype)])
        if self.objective == "binary":
            return linear.sigmoid(s) if self.kind == "ridge" else s  # LightGBM's binary predict is P(up)
        t = s * self.y_std + self.y_mean
        return np.exp(t + 0.5 * self.resid_var) if self.link == "log" else t

    @property
    def _dtype(self) -> Any:
        return np.float64 if self.kind == "ridge" else np.float32

    def importance(self, features: list[str]) -> dict[str, list[Any]]:
        """Columns of importance.csv: feature, lag, importance (share of the total), and gain/split (LightGBM)
        or coef (ridge, on the scaled inputs)."""
        names, lag = design_names(features, self.lags)
        if self.kind == "ridge":
            assert self.coef is not None
            raw = np.abs(self.coef)
            extra: dict[str, list[Any]] = {"coef": self.coef.tolist()}
        else:
            it = self.best_iteration or None
            raw = np.asarray(self.booster.feature_importance("gain", iteration=it), dtype=np.float64)
            extra = {"gain": raw.tolist(),
                     "split": np.asarray(self.booster.feature_importance("split", iteration=it)).tolist()}
        total = float(raw.sum())
        share = (raw / total if total > 0 else raw * 0.0).tolist()
        return {"feature": names, "lag": lag, "importance": share, **extra}


@dataclass
class TabularFit:
    """What `fit` returns: the fields of learn.training.FitResult that a run's outputs read."""

    model: TabularModel
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 1  # LightGBM: the best boosting round; ridge: 1
    best_loss: float = math.nan
    stopped: str = "completed"  # completed / early_stop
    message: str = ""


def fit(X: np.ndarray, label: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, window: int,
        m: ModelConfig, objective: str, link: str, seed: int) -> TabularFit:
    """Fit `m.kind` on the windows ending at train_idx; LightGBM early-stops on val_idx.

    `label` (N,) per row: 0/1 for binary, the value to forecast otherwise (a variance for link log)."""
    lags = m.lags or int(window)
    tr, va = (np.asarray(i, dtype=np.int64) for i in (train_idx, val_idx))
    t = np.asarray(label, dtype=np.float64)
    if link == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(t > 0, np.log(t), np.nan)
    tr, va = tr[np.isfinite(t[tr])], va[np.isfinite(t[va])]
    if len(tr) == 0:
        raise TrainingError("the training split has no samples; use more data or a shorter window/horizon")
    model = TabularModel(m.kind, objective, link, lags, int(X.shape[1]), int(window))
    if objective == "regression":
        sd = float(np.std(t[tr]))
        model.y_mean, model.y_std = float(np.mean(t[tr])), (sd if sd > 0 else 1.0)
    z = (t - model.y_mean) / model.y_std  # (N,) what is fitted
    t0 = time.perf_counter()
    if m.kind == "ridge":
        res = _fit_ridge(model, X, z, tr, va, m.ridge.alpha)
    else:
        res = _fit_lightgbm(model, X, z, tr, va, m, seed)
    if link == "log":
        held = va if len(va) else tr
        resid = t[held] - (model.score(design(X, held, lags, model._dtype)) * model.y_std + model.y_mean)
        model.resid_var = float(np.mean(resid ** 2))
    res.message += f" in {time.perf_counter() - t0:.2f} s on {len(tr)} rows x {lags * X.shape[1]} columns"
    return res


def _loss(model: TabularModel, X: np.ndarray, z: np.ndarray, rows: np.ndarray) -> float | None:
    """Mean squared error of the standardized target, or the mean log-loss (binary); None without rows."""
    if len(rows) == 0:
        return None
    s = np.concatenate([model.score(A) for A, _ in _chunks(X, rows, model.lags, dtype=model._dtype)])
    if model.objective == "binary":
        return float(np.mean(np.logaddexp(0.0, s) - z[rows] * s))
    return float(np.mean((z[rows] - s) ** 2))


def _fit_ridge(model: TabularModel, X: np.ndarray, z: np.ndarray, tr: np.ndarray, va: np.ndarray,
               alpha: float) -> TabularFit:
    t0 = time.perf_counter()
    if model.objective == "binary":
        model.coef, model.intercept = linear.logistic(design(X, tr, model.lags, np.float64), z[tr], alpha)
        what = f"logistic regression (alpha={alpha:g})"
    else:
        # shift: the training span's column means, the same for every lag (centring, see linear.py)
        shift = np.asarray(X[int(tr.min()) - model.lags + 1:int(tr.max()) + 1], dtype=np.float64).mean(axis=0)
        gram, xty, dz, my, n = linear.lagged_normal(X, tr, z[tr], model.lags, shift)
        model.coef, model.intercept = linear.solve_normal(gram, xty, dz, my, n, np.tile(shift, model.lags), alpha)
        what = f"ridge regression (alpha={alpha:g})"
    train_loss, val_loss = _loss(model, X, z, tr), _loss(model, X, z, va)
    record = {"epoch": 1, "train_loss": train_loss, "val_loss": val_loss, "lr": math.nan,
              "seconds": time.perf_counter() - t0, "samples_per_s": len(tr) / max(time.perf_counter() - t0, 1e-9)}
    best = val_loss if val_loss is not None else train_loss
    return TabularFit(model, [record], 1, float(best if best is not None else math.nan), "completed", f"fitted {what}")


def _lgb() -> Any:
    try:
        import lightgbm
    except ImportError:
        raise ConfigError(f"model.kind lightgbm needs the LightGBM library: {GBM_INSTALL}") from None
    return lightgbm


def lgb_params(m: ModelConfig, objective: str, seed: int) -> dict[str, Any]:
    """LightGBM parameters of the config: deterministic for a given seed and thread count."""
    g = m.lightgbm
    return {"objective": "binary" if objective == "binary" else "regression",
            "metric": "binary_logloss" if objective == "binary" else "l2",
            "num_leaves": g.num_leaves, "learning_rate": g.learning_rate, "min_data_in_leaf": g.min_child_samples,
            "feature_fraction": g.feature_fraction, "bagging_fraction": g.bagging_fraction,
            "bagging_freq": g.bagging_freq, "lambda_l2": g.lambda_l2, "seed": seed if g.seed is None else g.seed,
            "num_threads": g.threads, "deterministic": True, "force_row_wise": True, "verbose": -1}


def _fit_lightgbm(model: TabularModel, X: np.ndarray, z: np.ndarray, tr: np.ndarray, va: np.ndarray,
                  m: ModelConfig, seed: int) -> TabularFit:
    lgb = _lgb()
    g = m.lightgbm
    params = lgb_params(m, model.objective, seed)
    dtrain = lgb.Dataset(design(X, tr, model.lags), z[tr], free_raw_data=True)
    sets, names = [dtrain], ["train"]
    if len(va):
        sets.append(lgb.Dataset(design(X, va, model.lags), z[va], reference=dtrain))
        names.append("val")
    evals: dict[str, Any] = {}
    callbacks = [lgb.record_evaluation(evals)]
    if len(va):
        callbacks.append(lgb.early_stopping(g.early_stopping_rounds, verbose=False))
    t0 = time.perf_counter()
    booster = lgb.train(params, dtrain, num_boost_round=g.n_estimators, valid_sets=sets, valid_names=names,
                        callbacks=callbacks)
    seconds = time.perf_counter() - t0
    metric = params["metric"]
    tr_curve = list(evals.get("train", {}).get(metric, []))
    va_curve = list(evals.get("val", {}).get(metric, []))
    rounds = len(tr_curve)
    best = int(booster.best_iteration) if len(va) and booster.best_iteration > 0 else rounds
    model.booster, model.best_iteration = booster, best
    history = [{"epoch": i + 1, "train_loss": tr_curve[i], "val_loss": va_curve[i] if va_curve else None,
                "lr": g.learning_rate, "seconds": seconds / max(rounds, 1), "samples_per_s": math.nan}
               for i in range(rounds)]
    stopped = "early_stop" if rounds < g.n_estimators else "completed"
    best_loss = (va_curve or tr_curve)[best - 1] if rounds else math.nan
    msg = (f"LightGBM {best} of {rounds} rounds kept ("
           f"{'early stop on val ' + metric if stopped == 'early_stop' else 'all rounds'}; best {best_loss:.6g})")
    return TabularFit(model, history, best, float(best_loss), stopped, msg)


# ---------------------------------------------------------------- saving and loading (never pickled)


def save(model: TabularModel, run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write MODEL_FILE (and BOOSTER_FILE for LightGBM) into run_dir, atomically; returns MODEL_FILE's path."""
    run_dir = Path(run_dir)
    meta = {"format": FORMAT, "kind": model.kind, "objective": model.objective, "link": model.link,
            "lags": model.lags, "n_features": model.n_features, "window": model.window, "y_mean": model.y_mean,
            "y_std": model.y_std, "resid_var": model.resid_var, "intercept": model.intercept,
            "coef": None if model.coef is None else [float(c) for c in model.coef],
            "booster": BOOSTER_FILE if model.booster is not None else None, "best_iteration": model.best_iteration,
            "extra": extra or {}}
    if model.booster is not None:
        with atomic_path(run_dir / BOOSTER_FILE) as tmp:  # only the kept rounds: the loaded model predicts as-is
            model.booster.save_model(str(tmp), num_iteration=model.best_iteration or None)
    write_json(run_dir / MODEL_FILE, meta)
    return run_dir / MODEL_FILE


def load(run_dir: Path) -> tuple[TabularModel, dict[str, Any]]:
    """Rebuild a saved tabular model from run_dir alone; TrainingError naming the file when it cannot."""
    path = Path(run_dir) / MODEL_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        model = TabularModel(str(meta["kind"]), str(meta["objective"]), str(meta["link"]), int(meta["lags"]),
                             int(meta["n_features"]), int(meta["window"]), float(meta["y_mean"]),
                             float(meta["y_std"]), float(meta["resid_var"]),
                             None if meta["coef"] is None else np.asarray(meta["coef"], dtype=np.float64),
                             float(meta["intercept"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainingError(f"cannot load {path}: {str(e).splitlines()[0] if str(e) else e!r}; restore it or "
                            "train the run again") from None
    if meta.get("booster"):
        booster_path = Path(run_dir) / str(meta["booster"])
        if not booster_path.is_file():
            raise TrainingError(f"{booster_path} is missing; restore it or train the run again")
        lgb = _lgb()
        try:
            model.booster = lgb.Booster(model_file=str(booster_path))
        except lgb.basic.LightGBMError as e:
            raise TrainingError(f"cannot load {booster_path}: {str(e).splitlines()[0]}; restore it or train "
                                "the run again") from None
    return model, meta
