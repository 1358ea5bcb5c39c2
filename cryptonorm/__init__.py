"""cryptonorm: deep-learning forecasters on crypto markets with a switchable normalization layer.

`import cryptonorm as cn` gives the notebook API (cryptonorm/api.py): cn.load_config, cn.train, cn.load_run,
cn.backtest, cn.sweep, cn.fetch. It is imported on first use, so `import cryptonorm` (and the CLI's start)
stays free of torch, pandas and ccxt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptonorm._version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them on first use
    from cryptonorm.api import BacktestResult, Run, backtest, fetch, load_config, load_run, sweep, train

__all__ = ["BacktestResult", "Run", "__version__", "backtest", "fetch", "load_config", "load_run", "sweep", "train"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from cryptonorm import api

        return getattr(api, name)
    raise AttributeError(f"module 'cryptonorm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
