"""Backtests of a finished run's saved forecasts with other `backtest.*` settings: no retraining.

`rebacktest` writes RUN_DIR/backtest-<hash of the backtest section>/ (or `out`), never over the run's own
backtest/. `grid` evaluates every combination of a few `backtest.*` values on the VALIDATION split, picks
the strategy settings (everything but the costs) with the best Sharpe after costs there for each cost
level, and backtests the TEST split once per cost level with that choice: the test split never takes part
in a choice, so its figures are honest out-of-sample numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cryptonorm.atomic import write_csv, write_json
from cryptonorm.config import Config, build_config
from cryptonorm.errors import ConfigError, DataError, Hint
from cryptonorm.pipeline.backtesting import funding_of, read_forecasts, run_backtest, simulate_split
from cryptonorm.pipeline.rundir import (
    BACKTEST_DIR,
    BACKTEST_PREFIX,
    BACKTEST_YAML,
    GRID_CSV,
    GRID_FILES,
    GRID_JSON,
    HEATMAP_PNG,
    SELECTED_CSV,
    RunDir,
    contents,
    read_marker,
    write_marker,
)

COST_KEYS = ("fee_bps", "slippage_bps")  # cost scenarios: given by the market, never chosen on data
MAX_GRID = 400  # combinations; each is one backtest of the validation split


# ---------------------------------------------------------------- settings


def backtest_overrides(cfg: Config, overrides: Mapping[str, Any], *, option: str = "--set") -> Config:
    """`cfg` with `backtest.<key>` values replaced (keys with or without the `backtest.` prefix).

    Only settings that act on saved forecasts are allowed: anything outside backtest.*, and
    backtest.walk_forward.* (it changes the training), is a ConfigError naming the key.
    """
    raw = cfg.to_dict()
    section = dict(raw["backtest"])
    for key, value in overrides.items():
        leaf = _leaf(key, option)
        section[leaf] = value
    return build_config({**raw, "backtest": section}, source=option)


def _leaf(key: str, option: str, *, prefixed: bool = False) -> str:
    """The backtest field a key names; `prefixed`: the key must be written backtest.KEY (the command line)."""
    name = key.removeprefix("backtest.")
    if ("." in key or prefixed) and not key.startswith("backtest."):
        raise ConfigError(f"{option} {key}: a finished run can only be re-backtested with backtest.* keys "
                          "(the rest changes the model: train again with `cryptonorm train CONFIG --set ...`)")
    if name.startswith("walk_forward") or "." in name:
        raise ConfigError(f"{option} {key}: backtest.walk_forward changes the training, not the backtest; "
                          "train again with `cryptonorm train CONFIG --set ...`")
    if name not in Config.model_fields["backtest"].annotation.model_fields:  # type: ignore[union-attr]
        raise ConfigError(f"{option} {key}: unknown backtest key; see `cryptonorm config show` for the backtest "
                          "section")
    return name


def settings_hash(cfg: Config) -> str:
    """8 hex digits identifying the backtest section (what a re-backtest's folder is named after)."""
    text = json.dumps(cfg.backtest.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# ---------------------------------------------------------------- one backtest


def rebacktest(run_dir: Path, overrides: Mapping[str, Any] | None = None, out: Path | None = None, *,
               split: str = "test", write: bool = True, fmt: str | None = None) -> tuple[Path | None, Any]:
    """Backtest RUN_DIR's saved forecasts with `overrides` (backtest.* keys); no retraining.

    Writes what the backtest step writes (reports per `fmt`) to `out`, by default
    RUN_DIR/backtest-<settings hash>/ (RUN_DIR/backtest/ itself is never written here); `write=False`
    writes nothing and returns (None, result).
    """
    run_dir = Path(run_dir)
    cfg = backtest_overrides(RunDir(run_dir).finished_config(), overrides or {})
    if not write:
        return None, simulate_split(read_forecasts(run_dir), cfg, split, run_dir=run_dir)[0]
    out_dir = _out_dir(run_dir, out, f"{BACKTEST_PREFIX}{settings_hash(cfg)}", "rebacktest")
    return out_dir, run_backtest(run_dir, cfg, split, out_dir, fmt=fmt, kind="rebacktest")


def backtest_saved(run_dir: Path, overrides: Mapping[str, Any] | None = None, out: Path | None = None, *,
                   split: str = "test", write: bool = True, fmt: str | None = None) -> tuple[Path | None, Any]:
    """A finished run's saved forecasts backtested, for `cryptonorm backtest RUN_DIR` and `cn.backtest`: with
    the run's own settings into RUN_DIR/backtest/, or (other settings, another `out`, the validation split,
    `write=False`) as a re-backtest (`rebacktest`). Returns (folder written or None, the Backtest)."""
    from cryptonorm.pipeline.backtesting import backtest

    if overrides or out is not None or split != "test" or not write:
        return rebacktest(run_dir, overrides, out, split=split, write=write, fmt=fmt)
    return backtest(run_dir, fmt=fmt)


def _out_dir(run_dir: Path, out: Path | None, default: str, kind: str) -> Path:
    """Where a re-backtest (`kind` rebacktest) or grid goes: a new or empty folder, or one that an earlier
    one of the same kind for the same run made. The run's own results, another run, another run's backtest
    and folders of the user's are refused: nothing there is replaced."""
    path = Path(out) if out is not None else run_dir / default
    if path.resolve() == (run_dir / BACKTEST_DIR).resolve() or path.resolve() == run_dir.resolve():
        raise ConfigError(f"{{out}} {path}: that is the run's own results; choose another folder (default "
                          f"{run_dir / default})", hints=(Hint.OUT,))
    if not path.exists():
        return path
    if not path.is_dir():
        raise ConfigError(f"{{out}} {path} is a file; choose a new or empty folder", hints=(Hint.OUT,))
    if not contents(path):
        return path
    marker = read_marker(path)
    if marker.get("kind") == kind and marker.get("run") == str(run_dir.resolve()):
        return path  # an earlier re-backtest of this run: replaced by the new one
    if out is None and not marker and (path / (GRID_JSON if kind == "grid" else BACKTEST_YAML)).is_file():
        return path  # the run's own default folder, from a version that wrote no marker
    if RunDir(path).ours() or RunDir(path).is_run:
        what = "another run directory"
    elif marker:
        what = f"a {marker.get('kind')} of another run ({marker.get('run', '?')})"
    else:
        what = "files cryptonorm did not write"
    raise ConfigError(f"{{out}} {path} holds {what}; nothing there is replaced: choose a new or empty folder "
                      f"(default {run_dir / default})", hints=(Hint.OUT,))


# ---------------------------------------------------------------- grids


@dataclass
class GridResult:
    """A grid on the validation split and the test split backtested once per cost level.

    table: one row per combination: the grid keys, then val_sharpe, val_total_return, val_max_drawdown,
        val_trades, val_exposure, and `chosen` (the best strategy settings of its cost level).
    selected: one row per cost level: the grid keys (the chosen values), val_sharpe, then test_sharpe,
        test_total_return, test_max_drawdown, test_trades and the test buy-and-hold Sharpe.
    """

    keys: list[str]
    table: pd.DataFrame
    selected: pd.DataFrame
    val: dict[str, Any]  # bars, start, end of the validation split
    test: dict[str, Any]
    out_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`--set backtest.fee_bps=5` items -> {"backtest.fee_bps": 5} (YAML values), keys checked."""
    from cryptonorm.config import parse_override

    out: dict[str, Any] = {}
    for item in items:
        parts, value = parse_override(item)
        key = ".".join(parts)
        _leaf(key, "--set", prefixed=True)
        out[key] = value
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`backtest.threshold=[0,0.0002]` items -> {"threshold": [0, 0.0002]} (YAML values; a scalar is one value)."""
    from cryptonorm.config import parse_override

    grid: dict[str, list[Any]] = {}
    for item in items:
        parts, value = parse_override(item)
        key = ".".join(parts)
        leaf = _leaf(key, "--grid", prefixed=True)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"--grid {key}: give at least one value, e.g. --grid {key}=[0, 0.0005]")
        if leaf in grid:
            raise ConfigError(f"--grid {key} is given twice; list every value in one --grid")
        grid[leaf] = values
    if not grid:
        raise ConfigError("--grid: give at least one backtest.KEY=[v1, v2, ...]")
    if len(grid) > 2:
        raise ConfigError(f"--grid: at most two keys (the heatmap's axes), got {', '.join(grid)}")
    return grid


def grid(run_dir: Path, values: Mapping[str, Sequence[Any]], out: Path | None = None, *,
         overrides: Mapping[str, Any] | None = None, write: bool = True) -> GridResult:
    """Every combination of `values` (backtest keys -> values) on the validation split; per cost level the
    best Sharpe after costs there chooses the other settings; the test split is backtested once with them.
    `overrides` (backtest keys) change the run's settings the grid starts from."""
    run_dir = Path(run_dir)
    base = backtest_overrides(RunDir(run_dir).finished_config(), overrides or {})
    keys = [_leaf(k, "--grid") for k in values]
    if base.split.walk_forward.enabled:
        raise ConfigError(f"--grid chooses settings on the validation split, and {run_dir} is a walk-forward run "
                          "whose saved forecasts are all test forecasts; grid a single-split run instead")
    combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*(list(v) for v in values.values()))]
    if len(combos) > MAX_GRID:
        raise ConfigError(f"--grid has {len(combos)} combinations; at most {MAX_GRID}")
    configs = [backtest_overrides(base, c, option="--grid") for c in combos]  # every value checked first
    full = read_forecasts(run_dir)
    val, test = full[full["split"] == "val"], full[full["split"] == "test"]
    for name, rows in (("validation", val), ("test", test)):
        if len(rows) < 2:
            raise DataError(f"the {name} split of {run_dir} has {len(rows)} bar(s); a grid needs at least 2 in "
                            "the validation and the test split")
    out_dir = _out_dir(run_dir, out, f"{BACKTEST_PREFIX}grid-{_grid_hash(base, values)}", "grid") if write else None
    rows = []
    for combo, s in zip(combos, split_metrics(full, configs, "val"), strict=True):
        rows.append({**combo, "val_sharpe": s["sharpe"], "val_total_return": s["total_return"],
                     "val_max_drawdown": s["max_drawdown"], "val_trades": s["trades"], "val_exposure": s["exposure"]})
    table = pd.DataFrame(rows)
    table["chosen"] = False
    cost_keys = [k for k in keys if k in COST_KEYS]
    picked = []
    for _, group in (table.groupby(cost_keys, sort=False) if cost_keys else [((), table)]):
        best = int(group["val_sharpe"].fillna(float("-inf")).to_numpy().argmax())  # ties: the first listed
        idx = group.index[best]
        table.loc[idx, "chosen"] = True
        m = simulate_split(full, configs[idx], "test")[0].metrics
        s, bh = m["strategy"], m["buy_and_hold"]
        picked.append({**combos[idx], "val_sharpe": table.loc[idx, "val_sharpe"], "test_sharpe": s["sharpe"],
                       "test_total_return": s["total_return"], "test_max_drawdown": s["max_drawdown"],
                       "test_trades": s["trades"], "test_bh_sharpe": bh["sharpe"]})
    result = GridResult(keys, table, pd.DataFrame(picked), _span(val), _span(test), out_dir)
    if out_dir is not None:
        _write_grid(result, base, run_dir)
    return result


def split_metrics(full: pd.DataFrame, configs: Sequence[Config], split: str) -> list[dict[str, Any]]:
    """The strategy metrics of each config on one split of forecasts.csv (`full`), as
    `simulate_split(full, cfg, split)[0].metrics["strategy"]` gives them: the direction backtests of one
    funding setting as the columns of one simulation (trade/grid.py), vol_target ones one at a time."""
    from cryptonorm.trade.grid import simulate_grid

    out: list[dict[str, Any] | None] = [None] * len(configs)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault((cfg.backtest_mode, cfg.backtest.funding), []).append(i)
    df = full[full["split"] == split]
    for (mode, _), idx in groups.items():
        if mode == "vol_target" or len(df) < 2:  # simulate_split says what is wrong with a short split
            for i in idx:
                out[i] = simulate_split(full, configs[i], split, forecast_stats=False)[0].metrics["strategy"]
            continue
        cfg = configs[idx[0]]
        ts = df["timestamp"].to_numpy("int64")
        metrics = simulate_grid(ts, df["close"].to_numpy("float64"), df["forecast"].to_numpy("float64"),
                                [configs[i].backtest for i in idx], cfg.data.timeframe, cfg.target.kind,
                                funding=funding_of(cfg, ts))
        for i, m in zip(idx, metrics, strict=True):
            out[i] = m
    return [m for m in out if m is not None]


def _span(df: pd.DataFrame) -> dict[str, Any]:
    from cryptonorm.timeframes import format_ms

    ts = df["timestamp"].to_numpy("int64")
    return {"bars": len(df), "start": format_ms(int(ts[0])), "end": format_ms(int(ts[-1]))}


def _grid_hash(base: Config, values: Mapping[str, Sequence[Any]]) -> str:
    text = json.dumps([base.backtest.model_dump(mode="json"), {k: list(v) for k, v in values.items()}],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _write_grid(result: GridResult, base: Config, run_dir: Path) -> None:
    from cryptonorm.render.heatmap import plot_grid

    assert result.out_dir is not None
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in GRID_FILES:  # an earlier grid of this run in this folder: its files go before the new ones
        (out / name).unlink(missing_ok=True)
    write_marker(out, "grid", run_dir)
    result.paths = {"grid": out / GRID_CSV, "selected": out / SELECTED_CSV, "heatmap": out / HEATMAP_PNG,
                    "meta": out / GRID_JSON}
    write_csv(result.paths["grid"], result.table)
    write_csv(result.paths["selected"], result.selected)
    write_json(result.paths["meta"], {"keys": result.keys, "base": base.backtest.model_dump(mode="json"),
                                      "val": result.val, "test": result.test, "note": grid_note(result)})
    plot_grid(result.table, result.keys, result.paths["heatmap"],
              title=f"{base.name}: Sharpe after costs, validation split ({result.val['start']} .. "
                    f"{result.val['end']})")


def grid_note(result: GridResult) -> str:
    """What was chosen where: the sentence every grid output carries."""
    chosen = [k for k in result.keys if k not in COST_KEYS]
    what = f"{', '.join(chosen)} chosen" if chosen else "nothing chosen (costs only)"
    return (f"grid evaluated on the validation split only ({result.val['bars']} bars, {result.val['start']} .. "
            f"{result.val['end']}); {what} there by the best Sharpe after costs per cost level; the test split "
            f"({result.test['bars']} bars, {result.test['start']} .. {result.test['end']}) is backtested once per "
            "cost level with that choice and reported as is")
