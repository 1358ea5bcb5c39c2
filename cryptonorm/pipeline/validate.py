"""One validation path for a config on its own: what `config validate` checks is what train and fetch refuse.

The checks within and across config sections are pydantic validators (run whenever a Config is built);
this adds the one that needs a library: the exchange id must be one ccxt knows (no network).
"""

from __future__ import annotations

from cryptonorm.config import Config


def validate_config(cfg: Config) -> None:
    """ConfigError for anything wrong with `cfg` alone (no data, no network)."""
    from cryptonorm.data.exchange import check_exchange_id

    if not cfg.data.file:
        check_exchange_id(cfg.data.exchange)
