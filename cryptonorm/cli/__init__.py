"""The command line: `app` (typer) and `main`. Importing the command modules registers them on `app`.

Heavy modules (torch, pandas, ccxt) are imported inside the commands, so `cryptonorm --help` stays fast.
"""

from cryptonorm.cli import config_cmd, data, monitor, panel, runs, study, tools  # noqa: F401  (registers the commands, in help order)
from cryptonorm.cli.app import app, main

__all__ = ["app", "main"]
