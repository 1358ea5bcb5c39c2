"""Training samples/s on a universe against one coin: the same model, batch size and sample count.

    python benchmarks/bench_panel_training.py                     # MLP, 12 coins x ~1 year of 1h
    python benchmarks/bench_panel_training.py --batching by_time --norm batch

The universe (synthetic, coin-major layout, pipeline/panel.py) and one synthetic coin of about the same
number of training samples are trained by the same `learn.training.fit`, round-robin `--repeats` times; the
best samples/s of the epochs after the first (warm-up) is printed: on a shared machine other processes can
only slow a run down, so the best run is the least disturbed one. Target (issue 28): the universe within
1.2x of the single-coin rate.
"""

from __future__ import annotations

import argparse

from cryptonorm.config import build_config
from cryptonorm.config.universe import SyntheticUniverseConfig
from cryptonorm.data.synthetic_universe import generate
from cryptonorm.data.universe import load_universe
from cryptonorm.features.dataset import prepare
from cryptonorm.features.panel import prepare_panel
from cryptonorm.features.splits import split
from cryptonorm.learn.training import fit
from cryptonorm.pipeline.panel import panel_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coins", type=int, default=12)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--norm", default="layer")
    ap.add_argument("--batching", default="random", choices=["random", "by_time"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    common = {"features": {"window": 24}, "model": {"kind": "mlp", "norm": a.norm, "hidden": [64, 32]},
              "train": {"epochs": a.epochs, "batch_size": a.batch_size, "threads": 1, "patience": 100,
                        "device": "cpu"}}
    ucfg = build_config({**common, "data": {"exchange": "synthetic", "universe": {"synthetic": {
        "coins": a.coins, "days": a.days, "listed": 0.0, "delisted": 0.0}}},
        "train": {**common["train"], "batching": a.batching}})
    panel = panel_data(prepare_panel(load_universe(ucfg), ucfg), ucfg)
    # one coin with as many bars as the universe's coin-bars: a one-coin synthetic universe, coins x days long
    one = SyntheticUniverseConfig(coins=1, days=a.coins * a.days, listed=0.0, delisted=0.0)
    candles = generate(one, "1h", ["X/USDT"]).candles["X/USDT"]
    scfg = build_config(common)
    single = split(prepare(candles, scfg), scfg)
    best = {"universe": 0.0, "one coin": 0.0}
    for _ in range(a.repeats):
        for name, ds, cfg in (("universe", panel, ucfg), ("one coin", single, scfg)):
            hist = fit(ds, cfg).history
            best[name] = max(best[name], max(h["samples_per_s"] for h in hist[1:]) if len(hist) > 1 else 0.0)
    print(f"train samples: universe {len(panel.train_idx):,} ({a.coins} coins), one coin {len(single.train_idx):,}")
    print(f"MLP [64, 32], norm {a.norm}, batching {a.batching}, batch {a.batch_size}, 1 thread, best of "
          f"{a.repeats} x epochs 2..{a.epochs}")
    for name, v in best.items():
        print(f"{name:9s} {v:10,.0f} samples/s")
    print(f"ratio one coin / universe: {best['one coin'] / max(best['universe'], 1e-9):.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
