"""Peak memory and time of one validation pass (learn/loop.evaluate), with and without autograd.

Issue 23: `evaluate` ran with autograd on, and `total += loss * len(chunk)` chained every chunk's graph
until the final `.item()`, so memory grew with the validation set. Each way runs in its own child process
(a fresh peak RSS): an LSTM (hidden 64 x 2, layer norm) validates 20,000 windows of 32 steps x 16 features
in chunks of 4,096, on the CPU.

    python benchmarks/bench_eval_memory.py              # both ways, side by side
    python benchmarks/bench_eval_memory.py --way grad   # one way, in this process

  no_grad  evaluate as it is (under torch.no_grad)
  grad     the same function body with autograd on (the code before the fix)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

from cryptonorm.config import ModelConfig
from cryptonorm.learn.loop import Batches, evaluate

WINDOWS, WINDOW, FEATURES, CHUNK = 20_000, 32, 16, 4096


def run(way: str, repeats: int) -> dict[str, float]:
    """Validate `repeats` times the chosen way: peak RSS (MB) of this process, the best seconds, the loss."""
    from cryptonorm.learn.models import build_model

    torch.manual_seed(0)
    m = ModelConfig.model_validate({"kind": "lstm", "norm": "layer", "hidden": [64, 64]})
    model = build_model(m, FEATURES, WINDOW)
    n = WINDOWS + WINDOW - 1
    X, y = torch.randn(n, FEATURES), torch.randn(n)  # (N, F), (N,)
    val = torch.arange(WINDOW - 1, n)  # (WINDOWS,) END rows
    data = Batches(X, y, val[:0], val, torch.arange(-WINDOW + 1, 1), CHUNK, 0, 0.0, 1.0)
    body = evaluate.__wrapped__  # type: ignore[attr-defined]  # the function under torch.no_grad's decorator

    def once() -> float:
        if way == "grad":
            with torch.enable_grad():
                return float(body(model, data, nn.MSELoss(), CHUNK, False))
        return evaluate(model, data, nn.MSELoss(), CHUNK, False)

    seconds, loss = float("inf"), 0.0
    for _ in range(repeats):  # the best time: on a shared machine other processes only slow a pass down
        t0 = time.perf_counter()
        loss = once()
        seconds = min(seconds, time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mb": peak_mb, "seconds": seconds, "loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--way", choices=["no_grad", "grad"], help="run one way in this process (JSON out)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.way:
        print(json.dumps(run(args.way, args.repeats)))
        return
    print(f"validating {WINDOWS:,} windows ({WINDOW} x {FEATURES}) of an LSTM 64x2 in chunks of {CHUNK:,}, CPU, "
          f"{args.threads} thread(s)")
    print(f"{'way':>8} {'peak RSS MB':>12} {'best s':>8} {'loss':>10}")
    for way in ("grad", "no_grad"):
        out = subprocess.run([sys.executable, __file__, "--way", way, "--threads", str(args.threads),
                              "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{way:>8} {r['peak_rss_mb']:>12.0f} {r['seconds']:>8.2f} {r['loss']:>10.6f}")


if __name__ == "__main__":
    main()
