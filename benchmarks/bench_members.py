"""CPU time of training steps: M MLP members as one batched model (learn/members.py) against the same M
models stepped one after another with `learn.loop.train_step` (what M separate cells do inside their loops,
without their process start). Best of `--rounds`; prints a table, asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_members.py [--members 16] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from cryptonorm.config import ModelConfig
from cryptonorm.learn.loop import train_step
from cryptonorm.learn.members import Members, members_step
from cryptonorm.learn.models import build_model

W, F = 32, 16


def time_pair(cfg: ModelConfig, m: int, batch: int, steps: int, rounds: int) -> dict[str, float]:
    """Best CPU seconds of `steps` steps of m models stepped one after another, and of the m as one."""
    x = torch.randn(m, batch, W, F)
    y = torch.randn(m, batch)
    models = [build_model(cfg, F, W) for _ in range(m)]
    opts = [torch.optim.AdamW(p.parameters(), lr=1e-3) for p in models]
    members = Members([build_model(cfg, F, W) for _ in range(m)]).train()
    opt = torch.optim.AdamW(members.parameters(), lr=1e-3)
    loss = nn.MSELoss()

    def separate() -> None:
        for _ in range(steps):
            for i in range(m):
                train_step(models[i], opts[i], loss, x[i], y[i], 1.0, False)

    def batched() -> None:
        for _ in range(steps):
            members_step(members, opt, loss, x, y, 1.0)

    times = {}
    for name, fn in (("separate", separate), ("batched", batched)):
        fn()  # warm-up
        best = float("inf")
        for _ in range(rounds):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        times[name] = best
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    m = args.members
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}; "
          f"{m} members, {args.steps} steps, best of {args.rounds}")
    print(f"{'norm':<6} {'batch':>5} {'separate CPU s':>15} {'batched CPU s':>14} {'batched / separate':>19}")
    for norm in ("batch", "layer"):
        cfg = ModelConfig.model_validate({"kind": "mlp", "norm": norm, "hidden": [64, 32], "dropout": 0.0})
        for batch in (16, 64, 256):
            times = time_pair(cfg, m, batch, args.steps, args.rounds)
            print(f"{norm:<6} {batch:>5} {times['separate']:15.3f} {times['batched']:14.3f} "
                  f"{times['batched'] / times['separate']:19.2f}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
