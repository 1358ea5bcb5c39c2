"""THE metric registry: every metric a sweep or a claim can test on (`metric:` in a sweep file), which way is
better, the target kinds whose runs report it, and its short label for tables.

Names are metrics.json's test-split keys (the results columns without `test_`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptonorm.errors import ConfigError

ALL_KINDS = ("return", "direction", "volatility")


@dataclass(frozen=True)
class Metric:
    """One forecast metric: `higher` True when higher is better (IC, AUC), False for losses, None when
    neither (a slope that should be 1); `kinds`: the target kinds whose runs report it."""

    name: str
    higher: bool | None
    kinds: tuple[str, ...]
    label: str


_TABLE = (
    Metric("mse", False, ("return", "volatility"), "test mse"),  # on the form the network predicts (volatility)
    Metric("mae", False, ("return", "volatility"), "mae"),
    Metric("rank_ic", True, ALL_KINDS, "rank IC"),  # Spearman rank IC (ic_spearman where a run has no rank_ic)
    Metric("ic_spearman", True, ALL_KINDS, "ic_spearman"),
    Metric("ic_pearson", True, ALL_KINDS, "ic_pearson"),
    Metric("directional_accuracy", True, ALL_KINDS, "dir acc"),
    Metric("log_loss", False, ("direction",), "log loss"),
    Metric("auc", True, ("direction",), "AUC"),
    Metric("accuracy", True, ("direction",), "accuracy"),
    Metric("qlike", False, ("volatility",), "qlike"),
    Metric("mse_var", False, ("volatility",), "mse var"),
    Metric("mse_vol", False, ("volatility",), "mse_vol"),
    Metric("mz_r2", True, ("volatility",), "mz_r2"),
    Metric("mz_slope", None, ("volatility",), "mz_slope"),
    Metric("mz_intercept", None, ("volatility",), "mz_intercept"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _TABLE}
# the task's proper metrics when a sweep file names none; the first is the primary one (plots, interaction)
DEFAULT_METRICS = {"return": ("mse", "rank_ic"), "direction": ("log_loss", "auc"), "volatility": ("qlike", "mse_var")}


def check_metrics(names: Sequence[str], kind: str, where: str) -> None:
    """ConfigError naming the metric when a target kind does not have it (before anything runs)."""
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"{where}: unknown metric {name!r}; allowed: {', '.join(METRICS)}")
        if kind not in METRICS[name].kinds:
            have = [m.name for m in _TABLE if kind in m.kinds]
            raise ConfigError(f"{where}: a {kind} target has no metric {name!r}; choose from {', '.join(have)}")


def higher_is_better(metric: str) -> bool | None:
    """True for IC/AUC/accuracy-like metrics, False for losses, None when neither (a slope that should be 1)."""
    m = METRICS.get(metric.removeprefix("test_").removeprefix("val_"))
    return None if m is None else m.higher


def label(column: str) -> str:
    """A results column's short label for tables: the registry's for test_<metric>, else the name."""
    m = METRICS.get(column.removeprefix("test_")) if column.startswith("test_") else None
    return m.label if m is not None else column.removeprefix("test_")
