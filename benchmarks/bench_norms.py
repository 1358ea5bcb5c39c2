"""Training throughput of the norms for non-stationary markets against `norm: layer`, side by side.

For MLP and LSTM at one batch size (default 256), the same training step (AdamW, Huber loss, gradient
clipping; data resident on the device, windows gathered by index, as in bench_training.py's "minimal"
loop) is timed for `norm: layer` (the reference) and each new option:

  batchrenorm            model.norm: batchrenorm (past its warm-up, so the r/d correction is active)
  batch + recalibrate    model.norm: batch, model.batch_norm.eval: recalibrate (training is BatchNorm's; the
                         recalibration pass after training is timed separately, in seconds)
  layer + revin / dain   model.input_norm: revin / dain in front of the LayerNorm model

The methods run round-robin, `--repeats` times; the best samples/s over the epochs after the first
(warm-up) and the repeats is kept (on a shared machine other processes only slow a run down). The table
prints each option's samples/s and `layer / option` (the slowdown; the target is at most 1.3).

    python benchmarks/bench_norms.py                  # CPU, batch 256
    python benchmarks/bench_norms.py --device cuda --samples 262144
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_training import Data, best_rate, make_data, make_step

from cryptonorm.config import ModelConfig
from cryptonorm.learn.device import resolve_device, seed_everything
from cryptonorm.learn.models import build_model
from cryptonorm.learn.norms import recalibrate
from cryptonorm.learn.training import gather_windows

# (label, model keys) - the first is the reference
OPTIONS: list[tuple[str, dict[str, object]]] = [
    ("layer", {"norm": "layer"}),
    ("batch", {"norm": "batch"}),
    ("batchrenorm", {"norm": "batchrenorm", "renorm": {"warmup_steps": 0, "r_max_steps": 0, "d_max_steps": 0}}),
    ("batch + recalibrate", {"norm": "batch", "batch_norm": {"eval": "recalibrate"}}),
    ("layer + revin", {"norm": "layer", "input_norm": "revin"}),
    ("layer + dain", {"norm": "layer", "input_norm": "dain"}),
]


def train_rate(data: Data, m: ModelConfig, bs: int, epochs: int, dev: torch.device, bf16: bool) -> float:
    """Best training samples/s over epochs 2..epochs (bench_training's minimal loop)."""
    seed_everything(0, False)
    model = build_model(m, data.X.shape[1], data.window).to(dev).train()
    step = make_step(model, 1e-3, dev, bf16)
    X = torch.as_tensor(data.X).to(dev)  # (N, F)
    y = torch.as_tensor((data.y - data.y.mean()) / data.y.std()).to(dev)  # (N,)
    idx = torch.as_tensor(data.train_idx).to(dev)
    offsets = torch.arange(-data.window + 1, 1, device=dev)  # (W,)
    n_batches = len(idx) // bs

    def epoch() -> int:
        order = idx[torch.randperm(len(idx), device=dev)]
        for b in range(n_batches):
            i = order[b * bs : (b + 1) * bs]
            step(gather_windows(X, i, offsets), y[i])  # (B, W, F), (B,)
        return n_batches * bs

    return best_rate(epoch, epochs, dev)


def recalibration_seconds(data: Data, m: ModelConfig, windows: int, dev: torch.device) -> float:
    """Seconds of one `recalibrate` pass over the last `windows` training windows (best of 3)."""
    model = build_model(m, data.X.shape[1], data.window).to(dev)
    X = torch.as_tensor(data.X).to(dev)
    rows = torch.as_tensor(data.train_idx[-windows:]).to(dev)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        recalibrate(model, gather_windows(X, rows, torch.arange(-data.window + 1, 1, device=dev)))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each option, round-robin")
    ap.add_argument("--samples", type=int, default=None, help="training samples (default: 16384 MLP, 2048 LSTM)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--hidden", default="128,64", help="model.hidden, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--kinds", default="mlp,lstm")
    ap.add_argument("--recalibrate-windows", type=int, default=2000, help="model.batch_norm.recalibrate_bars")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is warm-up)")
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    bf16 = args.bf16 and dev.type == "cuda"
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"window {args.window}, {args.features} features, hidden {hidden}, {'bf16' if bf16 else 'fp32'}; "
          f"best of epochs 2..{args.epochs} x {args.repeats} repeats, round-robin\n")
    print("| model | option | samples/s | layer / option | recalibration pass |")
    print("|---|---|---:|---:|---:|")
    for kind in args.kinds.split(","):
        n = args.samples or (16_384 if kind == "mlp" else 2048)
        data = make_data(max(n, args.recalibrate_windows), args.window, args.features)
        cfgs = [(label, ModelConfig.model_validate({"kind": kind, "hidden": hidden, **keys}))
                for label, keys in OPTIONS]
        best = [0.0] * len(cfgs)
        for _ in range(args.repeats):
            for i, (_, m) in enumerate(cfgs):
                best[i] = max(best[i], train_rate(data, m, args.batch, args.epochs, dev, bf16))
        for (label, m), rate in zip(cfgs, best, strict=True):
            recal = (f"{recalibration_seconds(data, m, args.recalibrate_windows, dev):.3f} s "
                     f"({args.recalibrate_windows} windows)" if m.batch_norm.eval == "recalibrate" else "")
            print(f"| {kind} | {label} | {rate:,.0f} | {best[0] / rate:.2f} | {recal} |", flush=True)


if __name__ == "__main__":
    main()
