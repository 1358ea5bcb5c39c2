"""The sweep file: a base config, fixed overrides, a product `grid:`; every cell's config validated up front.

    name: norms
    base: ../quickstart.yaml      # relative to the sweep file
    set: {train.epochs: 5}        # fixed overrides for every cell (optional)
    grid:
      model.kind: [mlp, lstm]
      model.norm: [none, batch, layer, group]
      seed: [0, 1, 2, 3, 4]

The cells are the cartesian product of the grid. All cells train on the very same candles, so grid keys
under `data.` and `split.` are refused, and the top-level `seed` (init, dropout, batch order) is the only
randomness a seed grid varies. A cell's id is its readable grid values plus a hash of what it trains
(its config without the backtest settings, walk_forward aside).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cryptonorm.config import Config, apply_overrides, build_config, parse_override, read_yaml, set_dotted
from cryptonorm.config.experiment import check_name
from cryptonorm.config.loader import MOVED
from cryptonorm.config.model import DEPRECATED_KEYS
from cryptonorm.errors import ConfigError
from cryptonorm.evaluate.metrics import DEFAULT_METRICS, check_metrics
from cryptonorm.text import did_you_mean

# Grid keys under these sections would give cells different candles or splits: refused.
FIXED_SECTIONS = ("data", "split")
# Left out of a cell's config hash: they do not change what is computed.
UNHASHED_KEYS = (("name",), ("train", "threads"))


class SweepSpec(BaseModel):
    """A sweep file: a base config, fixed overrides and a grid over dotted keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str  # names the default sweep directory sweeps/<name>/
    base: str  # the experiment config every cell starts from, relative to the sweep file
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")  # dotted key -> value, every cell
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values; cartesian product
    # dotted key -> values; the lists move together (one length), e.g. batch size with lr; crossed with grid
    zip_: dict[str, list[Any]] = Field(default_factory=dict, alias="zip")
    # the metric(s) of the paired tests, a name or a list (first = primary); default by target kind:
    # qlike + mse_var (volatility), mse + rank_ic (return), log_loss + auc (direction)
    metric: str | list[str] | None = None
    seeds: int | None = Field(None, ge=1)  # seeds 0..N-1 when `seed` is not a grid/zip/set key (default 5)
    reference: str | None = None  # reference norm of the paired tests; default the first model.norm listed
    description: str = ""  # free text, shown in summary.md

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "the sweep directory")


@dataclass(frozen=True)
class Cell:
    """One grid point: its values, its validated config and a stable id (readable part + config hash)."""

    id: str
    params: dict[str, Any]  # grid key -> value, in grid order
    config: Config
    config_hash: str

    @property
    def label(self) -> str:
        return label(self.params)


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the spec, where it came from, and every cell, validated."""

    spec: SweepSpec
    path: Path  # the sweep file
    base_path: Path
    cli_overrides: tuple[str, ...]
    cells: list[Cell]
    grid: dict[str, list[Any]] = field(default_factory=dict)  # the spec's grid, plus `seed` when defaulted
    zip: dict[str, list[Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)  # tested metrics, primary first

    @property
    def grid_keys(self) -> list[str]:
        return [*self.grid, *self.zip]

    def default_dir(self) -> Path:
        return Path("sweeps") / self.spec.name


DEFAULT_SEEDS = 5  # seeds of a sweep that names none: enough for a Wilcoxon p of 0.0625, a t-test below 0.05


# long function: one pass over the sweep file, each check in the order a user reads the file
def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and validate a sweep file and every cell's config; ConfigError (one line) names the problem."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_spec_error(e)}") from None
    if not spec.grid and not spec.zip_:
        raise ConfigError(f"{path}: grid is empty; give at least one dotted key with a list of values, "
                          "e.g. model.norm: [none, layer]")
    for block, axes in (("grid", spec.grid), ("zip", spec.zip_)):
        for key, values in axes.items():
            _check_axis(path, block, key, values)
    _check_zip(path, spec)
    for key in spec.overrides:
        _check_key(key, f"{path}: set key {key!r}")
    if spec.reference is not None:
        norms = [str(v) for v in {**spec.grid, **spec.zip_}.get("model.norm", [])]
        if spec.reference not in norms:
            raise ConfigError(f"{path}: reference {spec.reference!r} must be one of the model.norm grid values "
                              f"({', '.join(norms) or 'model.norm is not a grid key'})")
    cli = tuple(overrides)
    for item in cli:
        parts, _ = parse_override(item)
        key = ".".join(parts)
        _check_key(key, f"--set {item!r}")
        if key in spec.grid or key in spec.zip_:
            raise ConfigError(f"--set {item!r}: {key} is a grid key of {path}; change the grid instead")
    base_path = (path.parent / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
    if not base_path.exists():
        raise ConfigError(f"{path}: base config {spec.base!r} not found (looked for {base_path}); the path is "
                          "relative to the sweep file")
    base_raw = read_yaml(base_path)
    for key, value in spec.overrides.items():
        _set_dotted(base_raw, key, value)
    base_raw = apply_overrides(base_raw, cli)
    if "name" not in spec.overrides and not any(o.startswith("name=") for o in cli):
        base_raw["name"] = spec.name
    grid = {**spec.grid, **_seed_axis(path, spec, cli)}
    cells = _expand(path, base_raw, grid, spec.zip_)
    metrics = _metrics(path, spec, cells)
    return Sweep(spec, path, base_path, cli, cells, grid, dict(spec.zip_), metrics)


def _check_axis(path: Path, block: str, key: str, values: list[object]) -> None:
    _check_key(key, f"{path}: {block} key {key!r}")
    if key.split(".")[0] in FIXED_SECTIONS:
        raise ConfigError(f"{path}: {block} key {key!r}: every cell must see the same candles and splits, so "
                          f"{'/'.join(FIXED_SECTIONS)} keys cannot vary; put them under `set:` (one value for "
                          "all cells) or run one sweep per value")
    if not values:
        raise ConfigError(f"{path}: {block}.{key} is an empty list; give at least one value")
    if block == "grid":
        dumped = [json.dumps(v, sort_keys=True, default=str) for v in values]
        dupes = sorted({d for d in dumped if dumped.count(d) > 1})
        if dupes:
            raise ConfigError(f"{path}: grid.{key} lists {', '.join(dupes)} more than once")


def _check_zip(path: Path, spec: SweepSpec) -> None:
    """zip lists move together: one length, no key also in grid, no repeated row."""
    if not spec.zip_:
        return
    both = [k for k in spec.zip_ if k in spec.grid]
    if both:
        raise ConfigError(f"{path}: {', '.join(both)} is under both grid and zip; list each key once")
    lengths = {k: len(v) for k, v in spec.zip_.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{path}: the zip lists move together and need one length, got "
                          f"{', '.join(f'{k}: {n}' for k, n in lengths.items())}; make them equally long")
    rows = [json.dumps(r, default=str) for r in zip(*spec.zip_.values(), strict=True)]
    dupes = sorted({r for r in rows if rows.count(r) > 1})
    if dupes:
        raise ConfigError(f"{path}: zip row {dupes[0]} ({', '.join(spec.zip_)}) appears more than once")


def _seed_axis(path: Path, spec: SweepSpec, cli: tuple[str, ...]) -> dict[str, list[Any]]:
    """seed: [0 .. seeds-1] unless the sweep gives seeds itself (grid, zip, set or --set seed=...)."""
    given = "seed" in spec.grid or "seed" in spec.zip_ or "seed" in spec.overrides or \
        any(o.split("=", 1)[0].strip() == "seed" for o in cli)
    if given:
        if spec.seeds is not None:
            raise ConfigError(f"{path}: seeds: {spec.seeds} and a `seed` key both set the seeds; keep one")
        return {}
    return {"seed": list(range(spec.seeds or DEFAULT_SEEDS))}


def _expand(path: Path, base_raw: dict[str, Any], grid: dict[str, list[Any]],
            zipped: dict[str, list[Any]]) -> list[Cell]:
    """Every cell: the grid's cartesian product crossed with the zip rows, each config validated."""
    rows = [dict(zip(zipped, r, strict=True)) for r in zip(*zipped.values(), strict=True)] if zipped else [{}]
    cells, seen = [], set()
    for combo, row in itertools.product(itertools.product(*grid.values()), rows):
        params = {**dict(zip(grid, combo, strict=True)), **row}
        raw = json.loads(json.dumps(base_raw, default=str))  # a deep copy per cell
        for key, value in params.items():
            _set_dotted(raw, key, value)
        label_ = label(params)
        cfg = build_config(raw, source=f"{path} cell [{label_}]")
        chash = config_hash(cfg)
        cell = Cell(cell_id(params, chash), params, cfg, chash)
        if cell.id in seen:  # two grid values that validate to the same config, e.g. 1 and 1.0
            raise ConfigError(f"{path}: cell [{label_}] has the same config as another cell; remove the duplicate "
                              "grid value")
        seen.add(cell.id)
        cells.append(cell)
    return cells


def _metrics(path: Path, spec: SweepSpec, cells: list[Cell]) -> list[str]:
    """The tested metrics (the sweep's `metric:`, else the target kind's defaults), checked per cell."""
    kind = cells[0].config.target.kind
    names = [spec.metric] if isinstance(spec.metric, str) else list(spec.metric or DEFAULT_METRICS[kind])
    if not names:
        raise ConfigError(f"{path}: metric is an empty list; name at least one, e.g. metric: qlike")
    for k in dict.fromkeys(c.config.target.kind for c in cells):
        check_metrics(names, k, f"{path}: metric")
    return list(dict.fromkeys(names))


def _spec_error(e: ValidationError) -> str:
    errors = e.errors()
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])  # a typo explains a "missing"
    loc = [str(p) for p in err["loc"]]
    allowed = ["name", "base", "set", "grid", "zip", "metric", "seeds", "reference", "description"]
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        hint = did_you_mean(loc[0], allowed)
        hint = f"{hint} " if hint else ""
        return f"unknown key {loc[0]!r}: {hint}allowed in a sweep file: {', '.join(allowed)}"
    if err["type"] == "missing":
        what = {"name": "a name for the sweep (it names sweeps/<name>/)",
                "base": "the experiment config every cell starts from, e.g. base: ../quickstart.yaml",
                "grid": "the grid, e.g. grid: {model.norm: [none, layer], seed: [0, 1]}"}
        return f"{'.'.join(loc)}: required: {what.get(loc[0], 'give it')}"
    key = ".".join(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[0] == "grid" and len(loc) >= 2 and err["type"] == "list_type":
        return f"{key}: expected a list of values, got {err.get('input')!r}; write e.g. {loc[1]}: [a, b]"
    if loc == ["grid"] or loc == ["set"]:
        return f"{key}: expected a mapping of dotted keys, got {err.get('input')!r}"
    return f"{key}: {msg} (got {err.get('input')!r})"


def _check_key(key: str, where: str) -> None:
    """A dotted key must name a field of Config; a dict field (exchange_options) takes any sub-key. Old model
    keys (config/model.py DEPRECATED_KEYS) are still accepted: the config moves them, with a note; so is a
    key at the place it moved from (config.loader.MOVED, e.g. backtest.walk_forward), checked at its new one."""
    parts = key.split(".")
    if parts[0] == "model" and len(parts) == 2 and parts[1] in DEPRECATED_KEYS:
        return
    for (old_sec, old_key), (new_sec, new_key) in MOVED.items():
        if parts[:2] == [old_sec, old_key]:
            parts = [new_sec, new_key, *parts[2:]]
    model: type[BaseModel] = Config
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            hint = did_you_mean(part, list(fields), prefix="".join(f"{p}." for p in parts[:i]))
            hint = f"{hint} " if hint else ""
            section = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"{where}: unknown config key; {hint}allowed in {section}: {', '.join(fields)}")
        ann = fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return
        model = ann


def _set_dotted(raw: dict[str, Any], key: str, value: object) -> None:
    set_dotted(raw, key.split("."), value)


def show(v: object) -> str:
    """A grid value as text: lists and dicts as JSON, the rest as str."""
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def config_hash(cfg: Config) -> str:
    """Hash of everything that changes what a cell TRAINS (not its name or thread count, nor the backtest
    settings other than walk_forward: a re-run with new backtest settings re-backtests the trained cell)."""
    d = cfg.to_dict()
    # walk_forward moved from backtest to split: hashed where it was, so cells trained before the move match
    d["backtest"] = {"walk_forward": d["split"].pop("walk_forward")}
    for path in UNHASHED_KEYS:
        node = d
        for p in path[:-1]:
            node = node[p]
        node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def cell_id(params: dict[str, object], chash: str) -> str:
    """Readable and stable: 'kind-mlp_norm-layer_seed-0_<config hash>'."""
    parts = []
    for key, value in params.items():
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", show(value)).strip("-") or "x"
        parts.append(f"{key.split('.')[-1]}-{slug}")
    readable = "_".join(parts)[:80].rstrip("_-")
    return f"{readable}_{chash}"



def label(params: dict[str, object]) -> str:
    """'model.norm=layer seed=0': a cell's grid values as one line."""
    return " ".join(f"{k}={show(v)}" for k, v in params.items())
