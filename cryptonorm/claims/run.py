"""`cryptonorm study`: run every claim's sweep (resumable), then judge each claim by its written rule.

Layout of STUDY_DIR (default studies/quick or studies/full):
    sweeps/<sweep name>.yaml    the resolved sweep file of each claim (base and data.file absolute)
    <sweep name>/               that sweep's directory (cells/, sweep_results.csv, summary.md, plots/)
    verdicts.md                 per claim: data, seeds, the numbers, Holm-corrected p-values, the verdict
    verdicts.json               the same as data (a list of dicts), for other renderers
    verdicts.html               the same as an interactive page (plotly; when the html extra is installed)
    plots/claim<N>_*.png        per claim: the metric by group over seeds, and the effects with 95% CIs

Every claim file is loaded and checked (schema, every cell's config, rule against grid, metric against
target, the data label) before any cell of any claim runs. Re-running the same command skips finished
cells (the sweep machinery's result.json) and re-judges from what is on disk.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from cryptonorm.claims import frame as claim_metrics
from cryptonorm.claims import markdown as verdicts_md
from cryptonorm.claims import plots as claim_plots
from cryptonorm.claims import verdicts as vd
from cryptonorm.claims.spec import Claim, find_claims, grid_values, load_claim, prepare
from cryptonorm.errors import ConfigError
from cryptonorm.evaluate.keys import SEED_KEY
from cryptonorm.sweeps.results import SWEEP_FILE

EventFn = Callable[[dict[str, Any]], None]
VERDICTS_JSON = "verdicts.json"
VERDICTS_MD = "verdicts.md"
VERDICTS_HTML = "verdicts.html"


@dataclass
class StudyOutcome:
    study_dir: Path
    profile: str  # quick or full
    claims: list[dict[str, Any]] = field(default_factory=list)  # the verdicts.json records
    seconds: float = 0.0
    failed_cells: int = 0


def default_dir(quick: bool) -> Path:
    return Path("studies") / ("quick" if quick else "full")


def load_study(folder: str | Path, study_dir: Path, quick: bool = False,
               overrides: tuple[str, ...] = (), data_dir: str | Path | None = None) -> list[Claim]:
    """Load and check every claim file of `folder` (nothing runs); ConfigError names the first problem.

    `data_dir`: the folder of the real candle files (claims.spec.load_claim; default $CRYPTONORM_DATA_DIR)."""
    claims = [load_claim(p, quick, data_dir) for p in find_claims(folder)]
    seen_ids: dict[int, Path] = {}
    seen_names: dict[str, Path] = {}
    for c in claims:
        cid, name = c.spec.claim.id, str(c.sweep_raw.get("name", ""))
        if cid in seen_ids:
            raise ConfigError(f"{c.path}: claim.id {cid} is also the id of {seen_ids[cid]}; give each claim its own")
        if name in seen_names:
            raise ConfigError(f"{c.path}: sweep.name {name!r} is also used by {seen_names[name]}; each claim "
                              "needs its own sweep directory")
        seen_ids[cid], seen_names[name] = c.path, c.path
    for c in sorted(claims, key=lambda c: c.spec.claim.id):
        if not c.sweep_raw.get("name"):
            raise ConfigError(f"{c.path}: sweep.name: required (it names the claim's sweep directory)")
        prepare(c, study_dir / "sweeps" / f"{c.name}.yaml", overrides)
    return sorted(claims, key=lambda c: c.spec.claim.id)


def run_study(claims: list[Claim], study_dir: Path, *, jobs: int = 1, profile: str = "full",
              on_event: EventFn | None = None, bar: Callable[[], Any] | None = None, executor: str = "local",
              address: str | None = None, gpus_per_cell: float = 0.0) -> StudyOutcome:
    """Run each claim's sweep (skipping finished cells), then judge and write verdicts.md/json and plots.

    `bar`: optional factory of a progress context manager yielding an event function (the CLI's sweep bar).
    `executor`, `address`, `gpus_per_cell`: as run_sweep's; with Ray, one connection serves every claim."""
    import contextlib

    from cryptonorm.sweeps import outputs as sweep_outputs
    from cryptonorm.sweeps.executors import check_executor, import_ray, ray_session
    from cryptonorm.sweeps.run import run_sweep

    check_executor(executor, address, gpus_per_cell)

    t0 = time.time()
    emit = on_event or (lambda _: None)
    outcome = StudyOutcome(study_dir.resolve(), profile)
    opts: dict[str, Any] = {"jobs": jobs, "executor": executor, "address": address, "gpus_per_cell": gpus_per_cell,
                            "cell_plots": False}
    session = ray_session(import_ray(), address, jobs) if executor == "ray" else contextlib.nullcontext()
    with session:
        for c in claims:
            assert c.sweep is not None
            emit({"event": "claim", "id": c.spec.claim.id, "title": c.spec.claim.title, "cells": len(c.sweep.cells)})
            sweep_dir = study_dir / c.name
            if bar is not None:
                with bar() as cell_events:
                    res = run_sweep(c.sweep, sweep_dir, on_event=cell_events, **opts)
            else:
                res = run_sweep(c.sweep, sweep_dir, on_event=on_event, **opts)
            outcome.failed_cells += res.failed
            sweep_outputs.render(res.sweep_dir, js_dir=study_dir)  # one plotly.min.js per study
    outcome.claims = judge_all(claims, study_dir, profile)
    outcome.seconds = time.time() - t0
    write_outputs(outcome)
    return outcome


def judge_all(claims: list[Claim], study_dir: Path, profile: str) -> list[dict[str, Any]]:
    """The verdict record of every claim from the cells on disk (no training)."""
    return [judge(c, study_dir / c.name, study_dir / "plots", profile) for c in claims]


def judge(claim: Claim, sweep_dir: Path, plots_dir: Path, profile: str = "full") -> dict[str, Any]:
    """One claim's verdict record: what it says, its data, the comparisons and the verdict by its rule."""
    assert claim.sweep is not None
    rule = claim.rule()
    spec = claim.spec
    keys = list(grid_values(claim.sweep))
    frame = claim_metrics.cell_frame(claim, sweep_dir)
    ok = frame[frame["status"] == "ok"]
    data = ok
    if spec.rule.change is not None and rule.metric in ok.columns:
        ch = spec.rule.change
        from cryptonorm.sweeps.spec import show as _show

        data = vd.relative_change(ok, rule.metric, ch.key, _show(ch.start), _show(ch.to), keys)
        keys = [k for k in keys if k != ch.key]
    if rule.metric in data.columns:
        table = vd.compare(data, rule, keys)
        verdict = vd.decide(table, rule)
    else:
        table = pd.DataFrame()
        verdict = vd.Verdict("inconclusive", f"no finished cell reports {rule.metric}", table)
    cfg = claim.sweep.cells[0].config
    seeds = sorted({str(s) for s in ok[SEED_KEY]}) if SEED_KEY in ok.columns else []
    record: dict[str, Any] = {
        "id": spec.claim.id, "title": spec.claim.title, "claim_file": str(claim.path), "profile": profile,
        "sweep": claim.name, "sweep_dir": str(sweep_dir.resolve()),
        "data": {"kind": spec.claim.data, "note": spec.claim.data_note, **_data_detail(cfg, sweep_dir)},
        "model": cfg.model.kind, "target": cfg.target.kind, "seeds": seeds,
        "cells": {"total": len(frame), "ok": len(ok), "failed": int((frame["status"] == "failed").sum()),
                  "pending": int((frame["status"] == "pending").sum())},
        "grid": {k: v for k, v in grid_values(claim.sweep).items()},
        "rule": {"text": spec.rule.text.strip(), "metric": rule.metric, "claimed": rule.claimed,
                 "margin": rule.margin, "alpha": rule.alpha, "require": rule.require, "test": rule.test,
                 "change": None if spec.rule.change is None else
                 {"key": spec.rule.change.key, "from": spec.rule.change.start, "to": spec.rule.change.to},
                 "correction": "Holm over the claim's primary comparisons; secondary ones a separate family"},
        "show": list(spec.rule.show),
        "verdict": verdict.verdict, "reason": verdict.reason,
        "comparisons": _records(verdict.table), "left_out": list(claim.left_out),
        "groups": _groups(ok, rule.metric, keys_of(claim), spec.rule.show),
        "steps_target": frame.attrs.get("steps_target"),
    }
    record["plots"] = [str(p.resolve()) for p in claim_plots.claim_plots(record, ok, plots_dir)]
    record["sweep_plots"] = sorted(str(p.resolve()) for p in (sweep_dir / "plots").glob("*.png"))
    # flat keys for a page built from verdicts.json (render/html_verdicts.py shows these first)
    prim = [c for c in record["comparisons"] if c["role"] == "primary" and c.get("p_holm") is not None]
    record.update({"claim": f"{spec.claim.id}. {spec.claim.title}", "numbers": verdicts_md.primary(record),
                   "p_corrected": min((c["p_holm"] for c in prim), default=None),
                   "verdict_line": verdicts_md.verdict_line(record)})
    return record


def keys_of(claim: Claim) -> list[str]:
    assert claim.sweep is not None
    return [k for k in grid_values(claim.sweep) if k != SEED_KEY]


def _data_detail(cfg: Any, sweep_dir: Path) -> dict[str, Any]:
    import json

    d = cfg.data
    out: dict[str, Any] = {"timeframe": d.timeframe, "since": d.since, "until": d.until,
                           "source": Path(d.file).name if d.file else d.exchange, "symbol": d.symbols[0]}
    if d.exchange == "synthetic" and not d.file:
        out["signal"] = d.synthetic.signal
    path = sweep_dir / SWEEP_FILE
    try:
        meta = json.loads(path.read_text())
        out.update({"rows": int(meta["data"]["rows"]), "hash": str(meta["data"]["hash"])})
    except (OSError, ValueError, KeyError, TypeError) as e:  # the verdict says what it cannot vouch for
        why = ("missing" if isinstance(e, FileNotFoundError) else f"unreadable ({e.strerror})" if isinstance(e, OSError)
               else "not valid JSON" if isinstance(e, ValueError) else "without data.rows and data.hash")
        out["missing"] = f"no data hash or row count: {path} is {why}"
    return out


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for r in table.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return out


def _groups(ok: pd.DataFrame, metric: str, keys: list[str], show: list[str]) -> list[dict[str, Any]]:
    """Mean, std and n of the rule's metric per grid combination (over seeds), and the means of `show`."""
    if metric not in ok.columns or not len(ok):
        return []
    out = []
    for combo, sel in (ok.groupby(keys, sort=False) if keys else [((), ok)]):
        combo = combo if isinstance(combo, tuple) else (combo,)
        v = pd.to_numeric(sel[metric], errors="coerce").dropna()
        extra = {}
        for m in show:
            x = pd.to_numeric(sel[m], errors="coerce").dropna() if m in sel.columns else pd.Series(dtype=float)
            extra[m] = float(x.mean()) if len(x) else None
        out.append({**dict(zip(keys, combo, strict=True)), "n": len(v),
                    "mean": float(v.mean()) if len(v) else None,
                    "std": float(v.std(ddof=1)) if len(v) > 1 else None, "show": extra})
    return out


def write_outputs(outcome: StudyOutcome) -> None:
    """verdicts.json and verdicts.md, written atomically."""
    from cryptonorm.atomic import write_json, write_text_atomic

    meta = {"profile": outcome.profile, "seconds": round(outcome.seconds, 1),
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"), "claims": outcome.claims}
    write_json(outcome.study_dir / VERDICTS_JSON, meta)
    write_text_atomic(outcome.study_dir / VERDICTS_MD, verdicts_md.markdown(meta, outcome.study_dir))
    with contextlib.suppress(ImportError):  # the interactive page needs plotly (the `html` extra); md and json do not
        import plotly  # noqa: F401

        from cryptonorm.render.html_verdicts import verdicts_page

        verdicts_page(outcome.claims, outcome.study_dir / VERDICTS_HTML)
