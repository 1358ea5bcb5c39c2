"""Training throughput: cryptonorm's `fit` against a minimal hand-written loop and a plain DataLoader loop.

For each model (MLP and LSTM), norm (layer placement, and the two recurrent-normalized LSTM cells) and
batch size, the same model is trained the same way (AdamW, Huber loss, gradient clipping at 1.0) by:

  ours        cryptonorm.learn.training.fit (samples/s of the training part of each epoch, from its history)
  minimal     a hand-written loop with X, y and the indices resident on the device, windows gathered by index
  dataloader  a torch Dataset returning one window per __getitem__, DataLoader(shuffle=True), copied to the device

Each method runs `--repeats` times, round-robin, and the best samples/s over the epochs after the first
(warm-up) and over the repeats is printed as a Markdown table: on a shared machine other processes can
only slow a run down, so the best run is the least disturbed one (as timeit's minimum).

    python benchmarks/bench_training.py --quick            # a few combinations (slow CPUs)
    python benchmarks/bench_training.py --device cuda      # all combinations on a GPU
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from cryptonorm.config import Config, ModelConfig, TrainConfig
from cryptonorm.learn.device import resolve_device, seed_everything
from cryptonorm.learn.models import build_model
from cryptonorm.learn.training import fit, fused_adamw


@dataclass(frozen=True)
class Data:
    """The fields of dataset.Dataset that fit reads."""

    X: np.ndarray  # (N, F) float32
    y: np.ndarray  # (N,) float32
    train_idx: np.ndarray  # END rows of the windows
    val_idx: np.ndarray
    test_idx: np.ndarray
    window: int


def make_data(n_train: int, window: int, n_features: int) -> Data:
    rng = np.random.default_rng(0)
    n_val = 512
    n = n_train + n_val + window
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    y = (1e-3 * rng.standard_normal(n)).astype(np.float32)  # log-return sized
    ends = np.arange(window - 1, n, dtype=np.int64)
    return Data(X, y, ends[:n_train], ends[n_train : n_train + n_val], ends[:0], window)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best_rate(run_epoch: Callable[[], int], epochs: int, dev: torch.device) -> float:
    """Best samples/s over epochs 2..epochs (the first one warms up allocators and kernels)."""
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = run_epoch()
        sync(dev)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates[1:])


Step = Callable[[torch.Tensor, torch.Tensor], None]


def make_step(model: nn.Module, lr: float, dev: torch.device, bf16: bool) -> Step:
    """One optimizer step, identical for both reference loops."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=fused_adamw(dev))
    loss_fn = nn.HuberLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(xb)
        loss = loss_fn(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def bench_minimal(data: Data, m: ModelConfig, bs: int, epochs: int, dev: torch.device, bf16: bool) -> float:
    seed_everything(0, False)
    model = build_model(m, data.X.shape[1], data.window).to(dev).train()
    step = make_step(model, 1e-3, dev, bf16)
    X = torch.as_tensor(data.X).to(dev)  # (N, F), resident
    y = torch.as_tensor((data.y - data.y.mean()) / data.y.std()).to(dev)  # (N,)
    idx = torch.as_tensor(data.train_idx).to(dev)
    offsets = torch.arange(-data.window + 1, 1, device=dev)  # (W,)
    n_batches = len(idx) // bs  # full batches only (a lone last sample would break BatchNorm)

    def epoch() -> int:
        order = idx[torch.randperm(len(idx), device=dev)]
        for b in range(n_batches):
            i = order[b * bs : (b + 1) * bs]
            step(X[i[:, None] + offsets], y[i])  # (B, W, F), (B,)
        return n_batches * bs

    return best_rate(epoch, epochs, dev)


class WindowDataset(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """The textbook way: one window per __getitem__, collated by the DataLoader."""

    def __init__(self, data: Data) -> None:
        self.X = torch.as_tensor(data.X)
        self.y = torch.as_tensor((data.y - data.y.mean()) / data.y.std())
        self.ends = data.train_idx
        self.window = data.window

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = int(self.ends[i])
        return self.X[t - self.window + 1 : t + 1], self.y[t]  # (W, F), ()


def bench_dataloader(data: Data, m: ModelConfig, bs: int, epochs: int, dev: torch.device, bf16: bool) -> float:
    seed_everything(0, False)
    model = build_model(m, data.X.shape[1], data.window).to(dev).train()
    step = make_step(model, 1e-3, dev, bf16)
    loader = DataLoader(WindowDataset(data), batch_size=bs, shuffle=True, drop_last=True,
                        pin_memory=dev.type == "cuda")

    def epoch() -> int:
        n = 0
        for xb, yb in loader:
            step(xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True))
            n += len(yb)
        return n

    return best_rate(epoch, epochs, dev)


def bench_ours(data: Data, m: ModelConfig, bs: int, epochs: int, dev: torch.device, bf16: bool) -> float:
    cfg = Config(
        model=m,
        train=TrainConfig.model_validate({
            "epochs": epochs, "batch_size": bs, "device": str(dev), "patience": epochs, "schedule": "cosine",
            "grad_clip": 1.0, "precision": "bf16" if bf16 else "fp32",
        }),
    )
    res = fit(data, cfg, dev)
    return max(h["samples_per_s"] for h in res.history[1:])


def combos(quick: bool) -> list[tuple[str, str, str, int]]:
    if quick:
        models = [("mlp", "none", "layer"), ("mlp", "batch", "layer"), ("mlp", "layer", "layer"),
                  ("lstm", "none", "layer"), ("lstm", "batch", "layer"), ("lstm", "layer", "layer"),
                  ("lstm", "layer", "cell"), ("lstm", "batch", "cell")]
        sizes = [256]
    else:
        models = [("mlp", n, "layer") for n in ("none", "batch", "layer", "group", "rms", "weight")]
        models += [("lstm", n, "layer") for n in ("none", "batch", "layer", "group", "instance", "rms", "weight")]
        models += [("lstm", "layer", "cell"), ("lstm", "batch", "cell")]
        sizes = [64, 256, 1024]
    return [(k, n, p, bs) for k, n, p in models for bs in sizes]


def default_samples(kind: str, quick: bool, dev: torch.device) -> int:
    """Enough training samples for epochs long enough to time, small enough for a slow CPU."""
    if dev.type != "cpu":
        return 262_144 if kind == "mlp" else 65_536
    if quick:
        return 8192 if kind == "mlp" else 1024
    return 32_768 if kind == "mlp" else 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--quick", action="store_true", help="a few combinations, batch 256, smaller data")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each method, round-robin")
    ap.add_argument("--samples", type=int, default=None, help="training samples (default: by model and device)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--hidden", default="128,64", help="model.hidden, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--kinds", default="mlp,lstm", help="model kinds to run, comma-separated")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is warm-up)")

    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    bf16 = args.bf16 and dev.type == "cuda"
    samples = {k: args.samples or default_samples(k, args.quick, dev) for k in ("mlp", "lstm")}
    data = {k: make_data(n, args.window, args.features) for k, n in samples.items()}
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, train samples {samples}, "
          f"window {args.window}, {args.features} features, hidden {hidden}, {'bf16' if bf16 else 'fp32'}; "
          f"best of epochs 2..{args.epochs} x {args.repeats} repeats\n")
    print("| model | norm | placement | batch | ours (samples/s) | minimal | DataLoader "
          "| ours / minimal | ours / DataLoader |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    methods = (bench_ours, bench_minimal, bench_dataloader)
    kinds = args.kinds.split(",")
    for kind, norm, placement, bs in combos(args.quick):
        if kind not in kinds:
            continue
        m = ModelConfig.model_validate(
            {"kind": kind, "norm": norm, "norm_placement": placement, "hidden": hidden, "groups": 4}
        )
        best = [0.0, 0.0, 0.0]
        for _ in range(args.repeats):
            for i, method in enumerate(methods):
                best[i] = max(best[i], method(data[kind], m, bs, args.epochs, dev, bf16))
        ours, minimal, loader = best
        print(f"| {kind} | {norm} | {placement} | {bs} | {ours:,.0f} | {minimal:,.0f} | {loader:,.0f} | "
              f"{ours / minimal:.2f} | {ours / loader:.2f} |", flush=True)


if __name__ == "__main__":
    main()
