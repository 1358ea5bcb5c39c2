"""Estimate the full claims profile's run time from a finished --quick study: cells x time per cell.

    python benchmarks/claims_estimate.py studies/quick [--jobs 16] [--folder configs/studies]

Each full-profile cell is priced by the finished quick cells of the same claim and the same cost class
(batch size, walk-forward or not): their mean training time, times the ratio of training budgets (full /
quick train.epochs, or train.samples under a samples budget). A batch size the quick profile did not run
is interpolated on log(time) vs log(batch size) between its neighbours. Cell overhead (data preparation,
backtest, report) is taken from the quick run itself: its measured wall time x jobs / its summed training
time (pass --quick-wall). Prints per claim the cells and CPU seconds, then the total and the wall time at
--jobs processes (a lower bound is the longest single cell). Training only on this machine's CPUs: a GPU
box with more cores scales by its cores, not its GPU (these models are too small to gain from one).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptonorm.claims import run as cl  # noqa: E402
from cryptonorm.sweeps.results import collect_results  # noqa: E402


def budget(cfg) -> float:  # type: ignore[no-untyped-def]
    t = cfg.train
    return float(t.samples if t.budget == "samples" else t.steps if t.budget == "steps" else t.epochs)


def cost_class(cfg) -> tuple[int, bool]:  # type: ignore[no-untyped-def]
    return cfg.train.batch_size, bool(cfg.backtest.walk_forward.enabled)


def quick_times(claim: cl.Claim, study_dir: Path) -> dict[tuple[int, bool], tuple[float, float]]:
    """cost class -> (mean training seconds, training budget) over the claim's finished quick cells."""
    assert claim.sweep is not None
    cfgs = {c.id: c.config for c in claim.sweep.cells}
    acc: dict[tuple[int, bool], list[float]] = defaultdict(list)
    budgets: dict[tuple[int, bool], float] = {}
    for r in collect_results(study_dir / claim.name):
        cfg = cfgs.get(r["cell_id"])
        if r.get("status") == "ok" and cfg is not None and r.get("train_seconds") is not None:
            acc[cost_class(cfg)].append(float(r["train_seconds"]))
            budgets[cost_class(cfg)] = budget(cfg)
    return {k: (sum(v) / len(v), budgets[k]) for k, v in acc.items()}


def price(cls: tuple[int, bool], full_budget: float, known: dict[tuple[int, bool], tuple[float, float]]) -> float:
    if cls in known:
        sec, b = known[cls]
        return sec * full_budget / b
    same = sorted((k[0], v) for k, v in known.items() if k[1] == cls[1])
    if not same:
        raise SystemExit(f"no quick cell to price batch size {cls[0]} (walk-forward {cls[1]})")
    lo = max((x for x in same if x[0] < cls[0]), default=same[0], key=lambda x: x[0])
    hi = min((x for x in same if x[0] > cls[0]), default=same[-1], key=lambda x: x[0])
    if lo[0] == hi[0]:
        return lo[1][0] * full_budget / lo[1][1]
    w = (math.log(cls[0]) - math.log(lo[0])) / (math.log(hi[0]) - math.log(lo[0]))
    a, b = (math.log(x[1][0] * full_budget / x[1][1]) for x in (lo, hi))
    return math.exp(a + w * (b - a))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", type=Path, help="a finished --quick study directory")
    ap.add_argument("--folder", type=Path, default=ROOT / "configs" / "studies")
    ap.add_argument("--jobs", type=int, default=16, help="processes of the machine the full profile would use")
    ap.add_argument("--quick-wall", type=float, default=None, help="measured wall seconds of the quick run")
    ap.add_argument("--quick-jobs", type=int, default=2, help="--jobs of the quick run")
    args = ap.parse_args()
    quick = cl.load_study(args.folder, Path("/tmp/claims_estimate/quick"), quick=True)
    full = cl.load_study(args.folder, Path("/tmp/claims_estimate/full"), quick=False)
    q_total = f_total = longest = 0.0
    print(f"{'claim':>5} {'quick cells':>11} {'quick train s':>13} {'full cells':>10} {'full train s':>12}")
    for q, f in zip(quick, full, strict=True):
        assert q.sweep is not None and f.sweep is not None
        known = quick_times(q, args.study_dir)
        qs = sum(known[cost_class(c.config)][0] for c in q.sweep.cells if cost_class(c.config) in known)
        cells = [price(cost_class(c.config), budget(c.config), known) for c in f.sweep.cells]
        q_total, f_total, longest = q_total + qs, f_total + sum(cells), max(longest, *cells)
        print(f"{q.spec.claim.id:>5} {len(q.sweep.cells):>11} {qs:>13.0f} {len(f.sweep.cells):>10} {sum(cells):>12.0f}")
    overhead = 1.0
    if args.quick_wall:
        overhead = args.quick_wall * args.quick_jobs / q_total
        print(f"quick: {q_total:.0f} s of training; measured {args.quick_wall:.0f} s wall x {args.quick_jobs} jobs "
              f"-> overhead factor {overhead:.2f} (cell setup, backtests, reports, idle workers)")
    total = f_total * overhead
    print(f"full: {f_total:.0f} s of training, {total:.0f} CPU-s with overhead; at --jobs {args.jobs}: "
          f"{total / args.jobs / 60:.1f} min wall if the cores are as fast as these (longest cell "
          f"{longest:.0f} s)")


if __name__ == "__main__":
    main()
