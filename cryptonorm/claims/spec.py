"""A claim file: one claim of the article, its pre-registered rule and the sweep that tests it.

    claim:
      id: 6
      title: BatchNorm degrades at small batches while GroupNorm and LayerNorm do not
      data: synthetic              # real | synthetic: checked against the sweep's data, printed in the verdict
      data_note: why this data     # optional
    rule:                          # fixed BEFORE the run (see verdicts.py for what each field means)
      text: the rule in words
      metric: test_mse             # a test_/val_ metric the target has, or a derived one (claims/frame.py)
      claimed: higher              # lower | higher | either: what the claim predicts for the treatment
      margin: 0.02                 # smallest effect that counts
      change: {key: train.batch_size, from: 128, to: 2}   # optional: compare relative changes across a key
      comparisons:
        - {key: model.norm, treatment: batch, control: layer}
    sweep: {name: ..., base: ../quickstart.yaml, set: {...}, grid: {...}}   # a sweep file (base relative to
                                                                              # this file, like data.file)
    quick: {set: {...}, grid: {...}}   # --quick: merged into sweep.set / replaces those grid entries

Everything is checked before any cell runs: the schema, the sweep (every cell's config), the data label
against the config, the rule's keys and values against the grid, the metric against the target.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryptonorm.claims import verdicts as vd
from cryptonorm.config import read_yaml
from cryptonorm.errors import ConfigError
from cryptonorm.evaluate.forecast import forecast_metrics
from cryptonorm.evaluate.keys import SEED_KEY
from cryptonorm.evaluate.vol_metrics import vol_metrics
from cryptonorm.sweeps.spec import Sweep, load_sweep
from cryptonorm.sweeps.spec import show as _show
from cryptonorm.text import did_you_mean

# metrics that are already relative (ratios): effects are their plain differences, not divided again
RELATIVE_METRICS = ("gap_at_best", "decay_mse", "diverged", "qlike_vs_har")
# metrics computed per cell from its run directory (claims/frame.py), beside the test_/val_ forecast metrics
DERIVED_METRICS = {
    "best_val_loss": "lowest validation loss over the epochs (the training loss function)",
    "final_val_loss": "validation loss after the last epoch (NaN when training stopped on a non-finite loss)",
    "diverged": "1 when training stopped on a non-finite loss, else 0",
    "gap_at_best": "validation loss / training loss - 1 at the best epoch (training loss as measured during the "
                   "epoch, in training mode: dropout on, BatchNorm on batch statistics)",
    "steps_to_target": "optimizer steps until the validation loss first reaches the claim's target (censored "
                       "at the budget + one epoch when never reached)",
    "decay_mse": "test MSE on the last third of the test period / on the first third (bars from split.test_start "
                 "on, so walk-forward runs are measured on the same bars)",
    "train_seconds": "wall time of training",
    "qlike_vs_har": "test QLIKE / the HAR-RV baseline's test QLIKE on the same bars - 1 (volatility targets; "
                    "below 0: the network beats HAR)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ComparisonSpec(_Strict):
    key: str = "model.norm"  # the grid key whose values are compared
    treatment: Any  # the value the claim is about
    control: Any = None  # the value it is compared with; null: the treatment against 0
    where: dict[str, Any] = Field(default_factory=dict)  # only cells with these grid values
    role: Literal["primary", "secondary"] = "primary"  # only primary comparisons decide the verdict
    quick: bool = True  # false: left out of the --quick profile (its grid may lack these values)


class ChangeSpec(_Strict):
    key: str  # the grid key the metric changes across, e.g. train.batch_size
    start: Any = Field(alias="from")  # relative change metric(to) / metric(from) - 1
    to: Any


class RuleSpec(_Strict):
    text: str  # the rule in words, printed in verdicts.md
    metric: str
    claimed: Literal["lower", "higher", "either"]
    comparisons: list[ComparisonSpec] = Field(min_length=1)
    test: Literal["paired", "spread"] = "paired"
    margin: float = Field(0.0, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    require: Literal["all", "any"] = "all"
    change: ChangeSpec | None = None
    relative: bool | None = None  # effect as % of the control's mean; default: yes unless the metric is a ratio
    show: list[str] = Field(default_factory=list)  # more metrics shown per group in verdicts.md (not judged)


class ClaimHead(_Strict):
    id: int = Field(ge=1)
    title: str
    data: Literal["real", "synthetic"]
    data_note: str = ""


class QuickSpec(_Strict):
    set: dict[str, Any] = Field(default_factory=dict)  # merged into sweep.set
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # replaces these grid entries
    zip: dict[str, list[Any]] | None = None  # replaces sweep.zip
    change: ChangeSpec | None = None  # replaces rule.change (when the quick grid lacks its values)


class ClaimFile(_Strict):
    claim: ClaimHead
    rule: RuleSpec
    sweep: dict[str, Any]
    quick: QuickSpec = QuickSpec()


@dataclass
class Claim:
    """A loaded claim: the file, the rule, the sweep file it resolves to, and (after prepare) the sweep."""

    spec: ClaimFile
    path: Path
    sweep_raw: dict[str, Any]  # the sweep file content with base and data.file made absolute
    sweep: Sweep | None = None
    left_out: tuple[str, ...] = ()  # comparisons the --quick profile leaves out (quick: false), as written

    @property
    def name(self) -> str:
        return str(self.sweep_raw["name"])

    def rule(self) -> vd.Rule:
        r = self.spec.rule
        comps = tuple(vd.Comparison(c.key, _show(c.treatment), None if c.control is None else _show(c.control),
                                    {k: _show(v) for k, v in c.where.items()}, c.role) for c in r.comparisons)
        relative = r.relative if r.relative is not None else (r.change is None and r.metric not in RELATIVE_METRICS)
        return vd.Rule(r.metric, r.claimed, comps, r.test, r.margin, r.alpha, r.require, relative=relative)


DATA_DIR_ENV = "CRYPTONORM_DATA_DIR"


def _schema_error(path: Path, e: ValidationError) -> ConfigError:
    """One line for the first schema error of a claim file: the dotted key, what is wrong, never a class name."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    allowed: dict[str, type[BaseModel]] = {"": ClaimFile, "claim": ClaimHead, "rule": RuleSpec,
                                           "quick": QuickSpec}
    if err["type"] in ("model_type", "dict_type", "model_attributes_type"):  # `claim: 5`: never a class name
        keys = f" with the keys {', '.join(allowed[loc].model_fields)}" if loc in allowed else ""
        return ConfigError(f"{path}: {loc}: must be a mapping{keys} (got {err.get('input')!r})")
    if err["type"] == "extra_forbidden":
        section = loc.rsplit(".", 1)[0] if "." in loc else ""
        names = list(allowed.get(section, ClaimFile).model_fields)
        hint = did_you_mean(loc.rsplit(".", 1)[-1], names)
        hint += " " if hint else ""
        return ConfigError(f"{path}: unknown key {loc!r}: {hint}allowed: {', '.join(names)}")
    if err["type"] == "missing":
        return ConfigError(f"{path}: {loc}: required; a claim file has the sections claim, rule, sweep (and "
                           "quick); keep other YAML files (bases) out of the claims folder")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{path}: {loc}: {msg} (got {err.get('input')!r})")


def load_claim(path: str | Path, quick: bool = False, data_dir: str | Path | None = None) -> Claim:
    """Read and check a claim file (schema only; `prepare` checks the sweep and the rule against it).

    `data_dir` (default: the environment variable CRYPTONORM_DATA_DIR): the folder of the candle files,
    replacing the folder of every `data.file` the claim names (the file name is kept); without it a
    relative data.file is relative to the claim file."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = ClaimFile.model_validate(raw)
    except ValidationError as e:
        raise _schema_error(path, e) from None
    sweep = dict(spec.sweep)
    left_out: tuple[str, ...] = ()
    if quick:
        kept = [c for c in spec.rule.comparisons if c.quick]
        if not any(c.role == "primary" for c in kept):
            raise ConfigError(f"{path}: rule.comparisons: the --quick profile must keep a primary comparison")
        left_out = tuple(f"{c.key}={_show(c.treatment)} vs {_show(c.control) if c.control is not None else 0}"
                         + (f" where {c.where}" if c.where else "") for c in spec.rule.comparisons if not c.quick)
        update: dict[str, Any] = {"comparisons": kept}
        if spec.quick.change is not None:
            update["change"] = spec.quick.change
        spec = spec.model_copy(update={"rule": spec.rule.model_copy(update=update)})
    if quick:
        sweep["set"] = {**(sweep.get("set") or {}), **spec.quick.set}
        sweep["grid"] = {**(sweep.get("grid") or {}), **spec.quick.grid}
        if spec.quick.zip is not None:
            sweep["zip"] = spec.quick.zip
    if "base" in sweep and not Path(str(sweep["base"])).is_absolute():
        sweep["base"] = str((path.parent / str(sweep["base"])).resolve())
    sets = dict(sweep.get("set") or {})
    file = sets.get("data.file")
    data_dir = data_dir if data_dir is not None else (os.environ.get(DATA_DIR_ENV) or None)
    if isinstance(file, str) and data_dir is not None:
        moved = Path(data_dir).expanduser().resolve() / Path(file).name
        if not moved.is_file():
            raise ConfigError(f"{path}: data.file {Path(file).name!r} is not in the data folder {data_dir} (from "
                              f"--data-dir or {DATA_DIR_ENV}); put it there or point the option at its folder")
        sets["data.file"] = str(moved)
        sweep["set"] = sets
    elif isinstance(file, str) and not Path(file).is_absolute():
        sets["data.file"] = str((path.parent / file).resolve())  # relative to the claim file, like base
        sweep["set"] = sets
    return Claim(spec, path, sweep, left_out=left_out)


def prepare(claim: Claim, sweep_file: Path, overrides: tuple[str, ...] = ()) -> Claim:
    """Write the resolved sweep file, load it (validating every cell) and check the claim against it."""
    from cryptonorm.atomic import write_text_atomic

    write_text_atomic(sweep_file, yaml.safe_dump(json.loads(json.dumps(claim.sweep_raw, default=str)),
                                                 sort_keys=False))
    try:
        claim.sweep = load_sweep(sweep_file, overrides)
    except ConfigError as e:
        raise ConfigError(f"{claim.path}: sweep: {str(e).replace(str(sweep_file) + ': ', '')}") from None
    check(claim)
    return claim


def grid_values(sweep: Sweep) -> dict[str, list[str]]:
    """Every key a cell varies (grid and linked keys) -> its values as shown strings, in first-seen order."""
    out: dict[str, list[str]] = {}
    for c in sweep.cells:
        for k, v in c.params.items():
            vals = out.setdefault(k, [])
            if _show(v) not in vals:
                vals.append(_show(v))
    return out


def target_metrics(kind: str) -> list[str]:
    """Names of the forecast metrics a target kind has (asked of evaluate.forecast itself, so never stale)."""
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0]) if kind == "direction" else np.array([0.2, 0.1, 0.4, 0.3, 0.5])
    pred = np.array([0.3, 0.6, 0.2, 0.7, 0.9]) if kind == "direction" else np.array([0.25, 0.15, 0.3, 0.35, 0.45])
    names = list(forecast_metrics(pred, y, kind))
    if kind == "volatility":  # a volatility run also reports its metrics on the variance (pipeline/vol.py)
        names += [k for k in vol_metrics(pred, y, float(y.mean())) if k not in names]
    return [k for k in names if k not in ("n", "base_rate")]


def check(claim: Claim) -> None:
    """The claim against its sweep: data label, seeds, the rule's keys, values and metric."""
    assert claim.sweep is not None
    where = f"{claim.path}"
    cfg = claim.sweep.cells[0].config
    synthetic = cfg.data.exchange == "synthetic" and not cfg.data.file
    if (claim.spec.claim.data == "synthetic") != synthetic:
        actual = "the synthetic market" if synthetic else f"real candles ({cfg.data.file or cfg.data.exchange})"
        raise ConfigError(f"{where}: claim.data says {claim.spec.claim.data!r} but the sweep trains on {actual}; "
                          "fix claim.data or the sweep's data settings")
    values = grid_values(claim.sweep)
    if SEED_KEY not in values or len(values[SEED_KEY]) < 2:
        raise ConfigError(f"{where}: the sweep's grid needs `seed` with at least 2 values (the tests pair cells "
                          "by seed); 5 or more are advisable")
    for key in values:
        if key.split(".")[0] in ("data", "split"):
            raise ConfigError(f"{where}: {key} varies between cells, so the claim would compare models trained "
                              "on different data; fix it in `set:` (one value) or write one claim per data set")
    rule = claim.spec.rule
    for m in [rule.metric, *rule.show]:
        _check_metric(where, m, cfg.target.kind)

    def check_value(what: str, key: str, value: Any) -> None:
        if key not in values:
            raise ConfigError(f"{where}: {what}: {key!r} is not a grid key of the sweep (grid keys: "
                              f"{', '.join(values)})")
        if _show(value) not in values[key]:
            raise ConfigError(f"{where}: {what}: {_show(value)!r} is not among {key}'s values "
                              f"({', '.join(values[key])})")

    if rule.change is not None:
        check_value("rule.change.from", rule.change.key, rule.change.start)
        check_value("rule.change.to", rule.change.key, rule.change.to)
    for i, c in enumerate(rule.comparisons):
        what = f"rule.comparisons[{i}]"
        if c.key == SEED_KEY or (rule.change is not None and c.key == rule.change.key):
            raise ConfigError(f"{where}: {what}.key: cannot compare across {c.key!r} (it pairs the cells)")
        check_value(f"{what}.treatment", c.key, c.treatment)
        if c.control is not None:
            check_value(f"{what}.control", c.key, c.control)
        elif rule.change is None and rule.test == "paired":
            raise ConfigError(f"{where}: {what}.control: null (against 0) needs a relative `rule.change` metric")
        for k, v in c.where.items():
            check_value(f"{what}.where", k, v)
    if not any(c.role == "primary" for c in rule.comparisons):
        raise ConfigError(f"{where}: rule.comparisons: at least one comparison must be primary")


def _check_metric(where: str, metric: str, kind: str) -> None:
    if metric in DERIVED_METRICS:
        return
    have = target_metrics(kind)
    split, _, name = metric.partition("_")
    if split in ("test", "val") and name in have:
        return
    allowed = [f"test_{m}" for m in have] + list(DERIVED_METRICS)
    hint = did_you_mean(metric, allowed)
    hint += " " if hint else ""
    raise ConfigError(f"{where}: rule.metric {metric!r} is not a metric of target.kind {kind!r}: {hint}"
                      f"choose one of {', '.join(allowed)} (or val_ instead of test_)")


def find_claims(folder: str | Path) -> list[Path]:
    """The claim files of a study folder (*.yaml, sorted), or the one file given."""
    p = Path(folder)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"{folder}: no such claim file or folder; pass e.g. configs/studies/")
    files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
    if not files:
        raise ConfigError(f"{folder}: no claim files (*.yaml) in this folder")
    return files
