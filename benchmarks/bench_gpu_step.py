"""GPU training throughput: fit eager vs fit with the whole step in a CUDA graph (train.cuda_graph), against
the minimal device-resident loop, by batch size; and every norm option's CUDA path (issue 13) at batch 256.

Prints figures, asserts nothing. Needs a CUDA device (`--device cuda`); on CPU it says so and stops.
    python benchmarks/bench_gpu_step.py [--epochs 3] [--samples 20000]
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


def ours(data: object, m: ModelConfig, bs: int, epochs: int, graph: bool) -> tuple[float, float, str]:
    """(best samples/s over epochs 2.., last train loss, fit's message) of cryptonorm's fit on CUDA."""
    cfg = Config(model=m, train=TrainConfig.model_validate({
        "epochs": epochs, "batch_size": bs, "device": "cuda", "patience": epochs, "schedule": "cosine",
        "grad_clip": 1.0, "cuda_graph": graph}))
    res = fit(data, cfg, torch.device("cuda"))  # type: ignore[arg-type]
    return max(h["samples_per_s"] for h in res.history[1:]), res.history[-1]["train_loss"], res.message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--sizes", default="16,64,256,1024")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    data = make_data(args.samples, 32, 16)
    dev = torch.device("cuda")
    print("\n| model | batch | minimal | fit eager | fit + CUDA graph | graph / eager | graph / minimal "
          "| last loss eager | last loss graph |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("mlp", "lstm"):
        m = ModelConfig(kind=kind, norm="layer", hidden=[128, 64])  # type: ignore[arg-type]
        for bs in (int(s) for s in args.sizes.split(",")):
            try:
                mini = bench_minimal(data, m, bs, args.epochs, dev, False)  # type: ignore[arg-type]
                eager, l_e, _ = ours(data, m, bs, args.epochs, False)
                graph, l_g, msg = ours(data, m, bs, args.epochs, True)
                note = f" ({msg})" if "note" in msg or "eager" in msg else ""
                print(f"| {kind} layer | {bs} | {mini:,.0f} | {eager:,.0f} | {graph:,.0f} | {graph / eager:.2f} | "
                      f"{graph / mini:.2f} | {l_e:.4f} | {l_g:.4f} |{note}", flush=True)
            except Exception as e:  # report and go on: one broken combination must not hide the others
                print(f"| {kind} layer | {bs} | failed: {type(e).__name__}: {str(e)[:200]} |", flush=True)
    print("\nnorm options on CUDA, batch 256, fit eager (samples/s; ratio = layer / option):")
    options = [("layer", {}), ("batch", {}), ("batchrenorm", {}), ("batch", {"bn_eval": "recalibrate"}),
               ("layer", {"input_norm": "revin"}), ("layer", {"input_norm": "dain"})]
    for kind in ("mlp", "lstm"):
        base = None
        for norm, extra in options + ([("layer", {"norm_placement": "cell"}), ("batch", {"norm_placement": "cell"})]
                                      if kind == "lstm" else []):
            label = f"{kind} {norm} {extra or ''}".strip()
            try:
                m = ModelConfig.model_validate({"kind": kind, "norm": norm, "hidden": [128, 64], **extra})
                t0 = time.perf_counter()
                rate, loss, msg = ours(data, m, 256, args.epochs, False)
                base = base or rate
                print(f"  {label:55s} {rate:>10,.0f}  ratio {base / rate:.2f}  last loss {loss:.4f}  "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
            except Exception as e:
                print(f"  {label:55s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    main()
