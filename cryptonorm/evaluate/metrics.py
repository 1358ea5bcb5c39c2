"""The metrics a sweep can test on (`metric:` in a sweep file), per target kind, and which way is better.

Names are metrics.json's test-split keys (the results columns without `test_`).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptonorm.errors import ConfigError

# metric -> (True: higher is better, False: lower is better, None: neither, e.g. a slope that should be 1;
# the target kinds whose runs report it). Names are metrics.json's test-split keys without the `test_`.
ALL_KINDS = ("return", "direction", "volatility")
METRICS: dict[str, tuple[bool | None, tuple[str, ...]]] = {
    "mse": (False, ("return", "volatility")),  # on the form the network predicts, for volatility
    "mae": (False, ("return", "volatility")),
    "rank_ic": (True, ALL_KINDS),  # Spearman rank IC (ic_spearman where a run has no rank_ic)
    "ic_spearman": (True, ALL_KINDS),
    "ic_pearson": (True, ALL_KINDS),
    "directional_accuracy": (True, ALL_KINDS),
    "log_loss": (False, ("direction",)),
    "auc": (True, ("direction",)),
    "accuracy": (True, ("direction",)),
    "qlike": (False, ("volatility",)),
    "mse_var": (False, ("volatility",)),
    "mse_vol": (False, ("volatility",)),
    "mz_r2": (True, ("volatility",)),
    "mz_slope": (None, ("volatility",)),
    "mz_intercept": (None, ("volatility",)),
}
# the task's proper metrics when a sweep file names none; the first is the primary one (plots, interaction)
DEFAULT_METRICS = {"return": ("mse", "rank_ic"), "direction": ("log_loss", "auc"), "volatility": ("qlike", "mse_var")}


def check_metrics(names: Sequence[str], kind: str, where: str) -> None:
    """ConfigError naming the metric when a target kind does not have it (before anything runs)."""
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"{where}: unknown metric {name!r}; allowed: {', '.join(METRICS)}")
        if kind not in METRICS[name][1]:
            have = [m for m, (_, kinds) in METRICS.items() if kind in kinds]
            raise ConfigError(f"{where}: a {kind} target has no metric {name!r}; choose from {', '.join(have)}")




def higher_is_better(metric: str) -> bool | None:
    """True for IC/AUC/accuracy-like metrics, False for losses, None when neither (a slope that should be 1)."""
    name = metric.removeprefix("test_").removeprefix("val_")
    return METRICS.get(name, (None, ()))[0]
