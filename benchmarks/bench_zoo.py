"""The model zoo's training throughput: every model.kind x model.norm, cryptonorm's `fit` against a minimal
hand-written loop over the same module (bench_training.py's: data resident, windows gathered by index,
AdamW, Huber loss, gradient clipping at 1.0, full batches).

Sizes are each kind's defaults (config/model.py) except model.hidden of mlp/lstm/gru, at window 32 and 16
features, so the table says how fast the defaults train. Each method runs `--repeats` times, round-robin;
the best samples/s over the epochs after the first and over the repeats is printed as Markdown (on a shared
machine other processes can only slow a run down). The target is ours / minimal >= 1 / 1.5 = 0.67.

    python benchmarks/bench_zoo.py                        # every kind x norm on the CPU
    python benchmarks/bench_zoo.py --kinds tcn,patchtst --norms default
    python benchmarks/bench_zoo.py --device cuda --cuda-graph   # a GPU, fit with and without train.cuda_graph
    python benchmarks/bench_zoo.py --real ../shared/data/BTC_USDT-4h.csv.gz --real-epochs 3
        # each kind at its defaults trained on real candles (every default but the data and epochs): seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from bench_training import bench_minimal, make_data  # noqa: E402

from cryptonorm.config import Config, ModelConfig, TrainConfig  # noqa: E402
from cryptonorm.config.norm_facts import KINDS  # noqa: E402
from cryptonorm.learn.device import resolve_device  # noqa: E402
from cryptonorm.learn.training import fit  # noqa: E402


def bench_ours(data: object, m: ModelConfig, bs: int, epochs: int, dev: torch.device, graph: bool) -> float:
    """fit's samples/s (training part of each epoch, from its history), best epoch after the first."""
    cfg = Config(model=m, train=TrainConfig.model_validate({
        "epochs": epochs, "batch_size": bs, "device": str(dev), "patience": epochs, "schedule": "cosine",
        "grad_clip": 1.0, "cuda_graph": graph}))
    res = fit(data, cfg, dev)  # type: ignore[arg-type]
    return float(max(h["samples_per_s"] for h in res.history[1:]))


def model_config(kind: str, norm: str, hidden: list[int]) -> ModelConfig:
    raw: dict[str, object] = {"kind": kind, "norm": norm, "groups": 4}
    if kind in ("mlp", "lstm", "gru"):
        raw["hidden"] = hidden
    return ModelConfig.model_validate(raw)


def real_runs(path: str, kinds: list[str], epochs: int | None, threads: int | None) -> None:
    """`cryptonorm train` of each kind at its defaults on a real candle file; wall seconds per run and epoch."""
    import tempfile
    import time

    from cryptonorm import pipeline
    from cryptonorm.config import build_config

    timeframe = Path(path).name.split("-")[-1].split(".")[0]  # BTC_USDT-4h.csv.gz -> 4h
    print(f"real candles {path} ({timeframe}), every default but model.kind" +
          (f" and train.epochs={epochs}" if epochs else "") + f", threads {threads or torch.get_num_threads()}\n")
    print("| kind | norm | train windows | epochs run | seconds | seconds / epoch | test mse |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        raw: dict[str, object] = {"data": {"file": path, "timeframe": timeframe, "symbol": "BTC/USDT",
                                           "exchange": "binance"}, "model": {"kind": kind},
                                  "train": {"device": "cpu", **({"epochs": epochs} if epochs else {}),
                                            **({"threads": threads} if threads else {})}}
        cfg = build_config(raw)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = pipeline.train(cfg, Path(tmp) / "run")
            seconds = time.perf_counter() - t0
            history = (Path(tmp) / "run" / "history.csv").read_text().strip().splitlines()
        n_epochs = len(history) - 1
        print(f"| {kind} | {cfg.model.norm} | {summary.metrics['samples']['train']:,} | {n_epochs} | {seconds:.0f} | "
              f"{seconds / max(n_epochs, 1):.1f} | {summary.metrics['test']['mse']:.3g} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--kinds", default=",".join(k for k, f in KINDS.items() if f.network),
                    help="model kinds, comma-separated (networks; ridge and LightGBM: bench_baselines.py)")
    ap.add_argument("--norms", default="all", help="'all' (every norm the kind allows), 'default', or a list")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each method, round-robin")
    ap.add_argument("--samples", type=int, default=4096, help="training samples")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--hidden", default="64", help="model.hidden of mlp/lstm/gru, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--cuda-graph", action="store_true", help="also fit with train.cuda_graph (CUDA)")
    ap.add_argument("--real", default=None, help="a candle file: time `cryptonorm train` of each kind instead")
    ap.add_argument("--real-epochs", type=int, default=None, help="with --real: train.epochs (default: config's)")
    args = ap.parse_args()
    if args.real:
        real_runs(args.real, args.kinds.split(","), args.real_epochs, args.threads)
        return
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is warm-up)")
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    data = make_data(args.samples, args.window, args.features)
    graph = args.cuda_graph and dev.type == "cuda"
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.samples} train "
          f"samples, window {args.window}, {args.features} features, batch {args.batch}, mlp/lstm/gru hidden "
          f"{hidden}, other kinds at their defaults; best of epochs 2..{args.epochs} x {args.repeats} repeats\n")
    print(f"| kind | norm | parameters | ours (samples/s) | minimal | ours / minimal |{' graph |' if graph else ''}")
    print(f"|---|---|---:|---:|---:|---:|{'---:|' if graph else ''}")
    for kind in args.kinds.split(","):
        norms = {"all": KINDS[kind].norms, "default": (KINDS[kind].default_norm,)}.get(args.norms)
        for norm in norms or [n for n in args.norms.split(",") if n in KINDS[kind].norms]:
            m = model_config(kind, norm, hidden)
            best = [0.0, 0.0, 0.0]
            for _ in range(args.repeats):
                best[0] = max(best[0], bench_ours(data, m, args.batch, args.epochs, dev, False))
                best[1] = max(best[1], bench_minimal(data, m, args.batch, args.epochs, dev, False))
                if graph:
                    best[2] = max(best[2], bench_ours(data, m, args.batch, args.epochs, dev, True))
            from cryptonorm.learn.models import build_model

            n_params = sum(p.numel() for p in build_model(m, args.features, args.window).parameters())
            extra = f" {best[2]:,.0f} |" if graph else ""
            print(f"| {kind} | {norm} | {n_params:,} | {best[0]:,.0f} | {best[1]:,.0f} | {best[0] / best[1]:.2f} |"
                  f"{extra}", flush=True)


if __name__ == "__main__":
    main()
