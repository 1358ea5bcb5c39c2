"""sweep.json as a typed object: what a sweep directory says about itself (name, grid, cells, data).

`run.run_sweep` writes it before any cell runs; `results.load_sweep_dir` reads it into a `SweepMeta`, which is
what the results, the report and its writers take (no raw dicts between them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptonorm.errors import DataError

JSONValue = object  # a value as JSON decodes it (str, int, float, bool, None, list, dict)


@dataclass(frozen=True)
class DataInfo:
    """The candles every cell trained on."""

    hash: str
    rows: int | None = None
    path: str | None = None
    first: int | None = None  # first candle's open time (ms)
    last: int | None = None


@dataclass(frozen=True)
class CellInfo:
    """One cell as sweep.json lists it."""

    id: str
    params: dict[str, JSONValue]
    seed: int | None = None


@dataclass(frozen=True)
class SweepMeta:
    """sweep.json: the resolved sweep (grid and zip values as the sweep file gave them)."""

    name: str
    grid: dict[str, list[JSONValue]]
    cells: list[CellInfo]
    data: DataInfo
    zip: dict[str, list[JSONValue]] = field(default_factory=dict)
    description: str | None = None
    sweep_file: str | None = None
    base: str | None = None
    set: dict[str, JSONValue] = field(default_factory=dict)  # the sweep file's fixed overrides
    cli_set: list[str] = field(default_factory=list)  # --set on the command line
    metrics: list[str] = field(default_factory=list)  # the sweep file's `metric:` (empty: the target's defaults)
    reference: str | None = None
    horizon: int = 1
    target: str | None = None
    updated: str | None = None

    @classmethod
    def from_json(cls, raw: JSONValue, where: Path) -> SweepMeta:
        """The object of a decoded sweep.json; DataError naming what is missing when it is not one."""
        if not isinstance(raw, dict):
            raise DataError(f"{where} is damaged (not a JSON object); run the sweep again to rewrite it")
        missing = [k for k in ("name", "grid", "cells", "data") if k not in raw]
        data = raw.get("data")
        if not missing and not (isinstance(data, dict) and "hash" in data):
            missing = ["data.hash"]
        if missing:
            raise DataError(f"{where} is damaged (no {', '.join(missing)}); run the sweep again to rewrite it")
        assert isinstance(data, dict)
        try:
            cells = [CellInfo(str(c["id"]), dict(c.get("params") or {}), c.get("seed")) for c in raw["cells"]]
            return cls(
                name=str(raw["name"]), grid=dict(raw["grid"]), cells=cells,
                data=DataInfo(str(data["hash"]), data.get("rows"), data.get("path"), data.get("first"),
                              data.get("last")),
                zip=dict(raw.get("zip") or {}), description=raw.get("description"), sweep_file=raw.get("sweep_file"),
                base=raw.get("base"), set=dict(raw.get("set") or {}), cli_set=list(raw.get("cli_set") or []),
                metrics=list(raw.get("metrics") or []), reference=raw.get("reference"),
                horizon=int(raw.get("horizon") or 1), target=raw.get("target"), updated=raw.get("updated"))
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise DataError(f"{where} is damaged ({e!s}); run the sweep again to rewrite it") from None
