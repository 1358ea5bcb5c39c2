"""`cryptonorm config show|validate`."""

from __future__ import annotations

import typer

from cryptonorm.cli.app import (
    ConfigArg,
    SetOpt,
    config_app,
    errors,
    load_cli_config,
    say,
)

# ---------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config: every default visible."""
    from cryptonorm.config import dump_yaml

    with errors():
        typer.echo(dump_yaml(load_cli_config(config, set_)), nl=False)


@config_app.command("validate")
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config; exit 2 with the first problem if it is wrong (what train and fetch would refuse)."""
    from cryptonorm.pipeline.validate import validate_config

    with errors():
        cfg = load_cli_config(config, set_)
        validate_config(cfg)
        source = f"file {cfg.data.file}" if cfg.data.file else cfg.data.exchange
        say(f"{config}: ok ({cfg.model.kind}, norm={cfg.model.norm}, {source} "
             f"{', '.join(cfg.data.symbols)} {cfg.data.timeframe})")

