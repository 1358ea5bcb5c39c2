"""`panel`: one model across a universe of coins (data.universe), with IC metrics and a portfolio backtest."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cryptonorm.cli.app import ConfigArg, JsonOpt, OutOpt, SetOpt, app, errors, load_cli_config, say


@app.command()
def panel(config: ConfigArg, out: OutOpt = None, json_: JsonOpt = False, set_: SetOpt = None) -> None:
    """Train one model on a universe of coins; report IC, ICIR, Newey-West t and the portfolio backtest."""
    from cryptonorm.atomic import json_safe
    from cryptonorm.pipeline.panel import run_panel

    with errors():
        cfg = load_cli_config(config, set_)
        result = run_panel(cfg, Path(out) if out is not None else Path("runs") / f"{cfg.name}-panel")
        if json_:
            typer.echo(json.dumps(json_safe({k: result.metrics[k] for k in ("model", "momentum", "samples")})))
            return
        for name in ("model", "momentum"):
            m = result.metrics[name]
            s = m["portfolio"]["strategy"]
            say(f"{name:9s} IC {m['ic']['ic']:+.4f}  ICIR {m['ic']['icir']:+.3f}  rank IC {m['ic']['rank_ic']:+.4f}  "
                f"NW t {m['ic']['t_nw']:+.2f}  portfolio Sharpe {s['sharpe']:+.2f} after costs, "
                f"{m['portfolio']['strategy_before_costs']['sharpe']:+.2f} before")
        say(f"written to {result.out}")
