"""Print the volatility table of a finished sweep (markdown): every model cell group (model.kind x
model.norm, or any grid keys) over its seeds, and every baseline, on the test split: QLIKE and variance MSE,
Mincer-Zarnowitz slope, and per-seed Diebold-Mariano p-values against HAR. Reads each cell's
run/metrics.json (written by `cryptonorm train`); never trains.

    .venv/bin/python benchmarks/vol_sweep_table.py sweeps/vol_norms [--split test]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _cells(sweep_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for res in sorted((sweep_dir / "cells").glob("*/result.json")):
        r = json.loads(res.read_text())
        mpath = res.parent / "run" / "metrics.json"
        if r.get("status") == "ok" and mpath.exists():
            out.append((r, json.loads(mpath.read_text())))
    return out


def _f(v: float, kind: str = "g4") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, {"g4": ".4g", "p": ".3g"}[kind])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    cells = _cells(args.sweep_dir)
    if not cells:
        raise SystemExit(f"no finished cell with run/metrics.json under {args.sweep_dir}/cells")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r, m in cells:
        params = {k: v for k, v in r.get("params", {}).items() if k != "seed"}
        groups[" ".join(f"{v}" for v in params.values())].append(m[args.split])
    print(f"| {args.split} ({len(cells)} cells) | seeds | QLIKE mean (sd) | variance MSE mean | MZ slope | "
          "DM p vs HAR, QLIKE (per seed) | better / worse than HAR at 5% (QLIKE) | DM p vs HAR, MSE (per seed) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ms in groups.items():
        q = np.array([m["qlike"] for m in ms])
        dq = [m["dm_vs_har"]["qlike"] for m in ms]
        dv = [m["dm_vs_har"]["mse_var"] for m in ms]
        better = sum(d["p"] < 0.05 and d["stat"] < 0 for d in dq)
        worse = sum(d["p"] < 0.05 and d["stat"] > 0 for d in dq)
        print(f"| {name} | {len(ms)} | {_f(q.mean())} ({_f(q.std(ddof=1) if len(q) > 1 else math.nan)}) | "
              f"{_f(float(np.mean([m['mse_var'] for m in ms])))} | {_f(float(np.mean([m['mz_slope'] for m in ms])))} | "
              f"{', '.join(_f(d['p'], 'p') for d in dq)} | {better} / {worse} | "
              f"{', '.join(_f(d['p'], 'p') for d in dv)} |")
    base = cells[0][1][args.split]["baselines"]
    for name, b in base.items():
        if "skipped" in b:
            print(f"| baseline {name} | - | {b['skipped']} | | | | | |")
            continue
        same = all(m[args.split]["baselines"][name].get("qlike") == b["qlike"] for _, m in cells)
        dq, dv = b.get("dm_vs_har", {}).get("qlike", {}), b.get("dm_vs_har", {}).get("mse_var", {})
        print(f"| baseline {name}{'' if same else ' (differs between cells!)'} | - | {_f(b['qlike'])} | "
              f"{_f(b['mse_var'])} | {_f(b['mz_slope'])} | {_f(dq.get('p'), 'p') if dq else 'reference'} | | "
              f"{_f(dv.get('p'), 'p') if dv else 'reference'} |")


if __name__ == "__main__":
    main()
