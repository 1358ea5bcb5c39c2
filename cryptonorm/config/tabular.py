"""Config of the tabular model kinds (`model.kind: ridge | lightgbm`): their own sub-sections and checks.

A tabular model sees the same scaled feature window as the networks, flattened to one row per sample
(`model.lags` most recent bars x every feature; all `features.window` bars when lags is null). It has no
hidden layers, so the network norms (`model.norm`, `model.input_norm`) mean nothing to it: setting them is
refused rather than silently ignored.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pydantic import Field

from cryptonorm.config.data import Section
from cryptonorm.config.norm_facts import KINDS

# model kinds fitted by learn/tabular.py instead of the torch loop: the kinds table's non-networks
TABULAR_KINDS = tuple(k for k, f in KINDS.items() if not f.network)
GBM_INSTALL = "pip install 'cryptonorm[gbm]'"  # the extra that brings LightGBM
# what a tabular run keeps instead of model.pt (written by learn/tabular.py)
MODEL_FILE = "model.json"  # kind, shapes, target standardization, ridge coefficients
BOOSTER_FILE = "model.txt"  # LightGBM's own text model
IMPORTANCE_FILE = "importance.csv"  # per design column: feature, lag, importance
TABULAR_FILES = (MODEL_FILE, BOOSTER_FILE, IMPORTANCE_FILE)


class RidgeConfig(Section):
    """Ridge regression (return, volatility) or L2-penalized logistic regression (direction)."""

    # L2 penalty on the coefficients (not on the intercept), in sklearn's units: minimizes
    # ||y - Xw - b||^2 + alpha ||w||^2 (regression), or the summed log-loss + alpha / 2 ||w||^2 (logistic)
    alpha: float = Field(1.0, ge=0)


class LightGBMConfig(Section):
    """Gradient-boosted trees (LightGBM); early stopping on the validation split."""

    num_leaves: int = Field(31, ge=2)  # leaves per tree
    learning_rate: float = Field(0.05, gt=0)  # shrinkage
    n_estimators: int = Field(500, ge=1)  # boosting rounds at most
    early_stopping_rounds: int = Field(50, ge=1)  # stop when the validation loss has not improved this long
    min_child_samples: int = Field(20, ge=1)  # rows per leaf at least
    feature_fraction: float = Field(0.8, gt=0, le=1)  # share of columns each tree sees
    bagging_fraction: float = Field(0.8, gt=0, le=1)  # share of rows each bagging round sees
    bagging_freq: int = Field(1, ge=0)  # re-draw the rows every n rounds (0 = no bagging)
    lambda_l2: float = Field(0.0, ge=0)  # L2 penalty on leaf values
    seed: int | None = None  # null = the experiment's seed
    threads: int = Field(1, ge=1)  # LightGBM threads: results are reproducible for a given seed and count


def check_tabular(model: Any) -> None:
    """ValueError (one line, naming the key) for a tabular kind with a network option set, or LightGBM
    asked for without the library; `model` is the ModelConfig being validated."""
    if model.kind not in TABULAR_KINDS:
        if model.lags is not None:
            raise ValueError(f"model.lags is for model.kind ridge or lightgbm (the networks see the whole "
                             f"features.window); remove it for model.kind {model.kind!r}")
        return
    if model.input_norm != "none":
        raise ValueError(f"model.input_norm {model.input_norm!r} is a network layer: model.kind {model.kind!r} "
                         "has none; set model.input_norm none (the features are still scaled by features.scaler)")
    if model.norm != "none":  # the kinds table (norm_facts.py) makes none their default
        raise ValueError(f"model.norm {model.norm!r} is a network layer: model.kind {model.kind!r} has none; "
                         "set model.norm none or remove it (the features are still scaled by features.scaler)")
    if model.kind == "lightgbm" and importlib.util.find_spec("lightgbm") is None:
        raise ValueError(f"model.kind lightgbm needs the LightGBM library: {GBM_INSTALL}")


def check_tabular_across(cfg: Any) -> None:
    """The checks of a tabular kind that span sections; `cfg` is the root Config being validated."""
    m = cfg.model
    if m.lags is not None and m.lags > cfg.features.window:
        raise ValueError(f"model.lags={m.lags} is more bars than features.window={cfg.features.window} holds; "
                         "lower model.lags or lengthen the window")
    if m.kind in TABULAR_KINDS and cfg.data.universe is not None:
        raise ValueError(f"model.kind {m.kind!r} is not available on a universe of coins (data.universe) yet: "
                         "train it on one coin (data.symbol), or use model.kind mlp or lstm")
