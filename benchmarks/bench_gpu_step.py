"""GPU training throughput: fit eager vs fit with the whole step in a CUDA graph (train.cuda_graph), against
the minimal device-resident loop, by batch size; and every norm option's CUDA path (issue 13) at batch 256.

Prints figures, asserts nothing. Needs a CUDA device (`--device cuda`); on CPU it says so and stops.
    python benchmarks/bench_gpu_step.py [--epochs 3] [--samples 20000] [--sections graph,norms,accel]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_training import bench_minimal, make_data  # noqa: E402

from cryptonorm.config import Config, ModelConfig, TrainConfig  # noqa: E402
from cryptonorm.learn.training import fit  # noqa: E402


def ours(data: object, m: ModelConfig, bs: int, epochs: int, graph: bool, **train: object) -> tuple[float, float, str]:
    """(best samples/s over epochs 2.., last train loss, fit's message) of cryptonorm's fit on CUDA."""
    cfg = Config(model=m, train=TrainConfig.model_validate({
        "epochs": epochs, "batch_size": bs, "device": "cuda", "patience": epochs, "schedule": "cosine",
        "grad_clip": 1.0, "cuda_graph": graph, **train}))
    res = fit(data, cfg, torch.device("cuda"))  # type: ignore[arg-type]
    return max(h["samples_per_s"] for h in res.history[1:]), res.history[-1]["train_loss"], res.message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--sizes", default="16,64,256,1024")
    ap.add_argument("--sections", default="graph,norms",
                    help="comma-separated: graph (eager vs CUDA graph by batch), norms (every norm option), "
                         "accel (bf16 and torch.compile at batch --accel-batch)")
    ap.add_argument("--accel-batch", type=int, default=256)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    data = make_data(args.samples, 32, 16)
    dev = torch.device("cuda")
    sections = args.sections.split(",")
    if "graph" in sections:
        graph_table(data, dev, args.sizes, args.epochs)
    if "norms" in sections:
        norms_table(data, args.epochs)
    if "accel" in sections:
        accel_table(data, args.accel_batch, args.epochs)


def accel_table(data: object, bs: int, epochs: int) -> None:
    """bf16 autocast and torch.compile against eager fp32, MLP and LSTM with LayerNorm, one batch size.
    The compile rows include no compile time: samples/s are the best of epochs 2.. (the first compiles)."""
    print(f"\nprecision and compile, batch {bs} (samples/s; x eager = the variant / eager fp32):\n")
    print("| model | variant | samples/s | x eager | last loss | note |")
    print("|---|---|---:|---:|---:|---|")
    variants: list[tuple[str, bool, dict[str, object]]] = [
        ("eager fp32", False, {}), ("eager bf16", False, {"precision": "bf16"}),
        ("CUDA graph fp32", True, {}), ("CUDA graph bf16", True, {"precision": "bf16"}),
        ("compile default", False, {"compile": "default"}),
        ("compile reduce-overhead", False, {"compile": "reduce-overhead"})]
    for kind in ("mlp", "lstm"):
        m = ModelConfig(kind=kind, norm="layer", hidden=[128, 64])  # type: ignore[arg-type]
        base = None
        for label, graph, train in variants:
            t0 = time.perf_counter()
            try:
                rate, loss, msg = ours(data, m, bs, epochs, graph, **train)
            except Exception as e:  # report and go on
                print(f"| {kind} | {label} | failed: {type(e).__name__}: {str(e)[:160]} | | | |", flush=True)
                continue
            base = base or rate
            note = msg if ("note" in msg or "eager" in msg) else ""
            print(f"| {kind} | {label} | {rate:,.0f} | {rate / base:.2f} | {loss:.4f} | "
                  f"{note[:100]} ({time.perf_counter() - t0:.0f} s wall incl. compile) |", flush=True)


def graph_table(data: object, dev: torch.device, sizes: str, epochs: int) -> None:
    print("\n| model | batch | minimal | fit eager | fit + CUDA graph | graph / eager | graph / minimal "
          "| last loss eager | last loss graph |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("mlp", "lstm"):
        m = ModelConfig(kind=kind, norm="layer", hidden=[128, 64])  # type: ignore[arg-type]
        for bs in (int(s) for s in sizes.split(",")):
            try:
                mini = bench_minimal(data, m, bs, epochs, dev, False)  # type: ignore[arg-type]
                eager, l_e, _ = ours(data, m, bs, epochs, False)
                graph, l_g, msg = ours(data, m, bs, epochs, True)
                note = f" ({msg})" if "note" in msg or "eager" in msg else ""
                print(f"| {kind} layer | {bs} | {mini:,.0f} | {eager:,.0f} | {graph:,.0f} | {graph / eager:.2f} | "
                      f"{graph / mini:.2f} | {l_e:.4f} | {l_g:.4f} |{note}", flush=True)
            except Exception as e:  # report and go on: one broken combination must not hide the others
                print(f"| {kind} layer | {bs} | failed: {type(e).__name__}: {str(e)[:200]} |", flush=True)


def norms_table(data: object, epochs: int) -> None:
    print("\nnorm options on CUDA, batch 256, fit eager (samples/s; ratio = layer / option):")
    options = [("layer", {}), ("batch", {}), ("batchrenorm", {}), ("batch", {"batch_norm": {"eval": "recalibrate"}}),
               ("layer", {"input_norm": "revin"}), ("layer", {"input_norm": "dain"})]
    for kind in ("mlp", "lstm"):
        base = None
        for norm, extra in options + ([("layer", {"norm_placement": "cell"}), ("batch", {"norm_placement": "cell"})]
                                      if kind == "lstm" else []):
            label = f"{kind} {norm} {extra or ''}".strip()
            try:
                m = ModelConfig.model_validate({"kind": kind, "norm": norm, "hidden": [128, 64], **extra})
                t0 = time.perf_counter()
                rate, loss, msg = ours(data, m, 256, epochs, False)
                base = base or rate
                print(f"  {label:55s} {rate:>10,.0f}  ratio {base / rate:.2f}  last loss {loss:.4f}  "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
            except Exception as e:
                print(f"  {label:55s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    main()
