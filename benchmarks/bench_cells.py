"""Recurrent-normalized LSTM cells (`model.norm_placement: cell`): the old autograd loop against the cells
with the hand-written backward (issue 17), side by side in one run. Prints Markdown tables, asserts nothing.

CPU (default): one training step (forward, MSE, backward, AdamW) of the LSTM forecaster with LN-LSTM or
BN-LSTM cells, old vs new, round-robin over `--repeats` rounds of `--steps` steps each, for 1 and 2 threads
and batch 64 and 256 (window 32, 16 features). Best of the rounds, in wall time and in process CPU time (on
a loaded machine the CPU time is disturbed less); "old" is tests/cell_reference.py, the pre-issue-17 loop.

    python benchmarks/bench_cells.py [--repeats 5] [--steps 3] [--hidden 64]

GPU (`--device cuda`): cryptonorm's `fit` (samples/s of the best epoch after the first) with the old cells,
the new cells, the new cells with train.cuda_graph, and, for scale, cuDNN's LSTM with LayerNorm between
layers (norm_placement layer), at batch 64 and 256.

    python benchmarks/bench_cells.py --device cuda --hidden 128,64 [--steps-per-epoch 24] [--epochs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from bench_training import make_data  # noqa: E402
from cell_reference import old_bn_lstm, old_ln_lstm  # noqa: E402

from cryptonorm.config import Config, ModelConfig, TrainConfig  # noqa: E402
from cryptonorm.learn.models import BatchNormLSTM, LayerNormLSTM, build_model  # noqa: E402
from cryptonorm.learn.training import fit  # noqa: E402

WINDOW, FEATURES = 32, 16
OLD: dict[type, Callable[..., torch.Tensor]] = {LayerNormLSTM: old_ln_lstm, BatchNormLSTM: old_bn_lstm}


def cell_config(norm: str, hidden: list[int]) -> ModelConfig:
    return ModelConfig.model_validate({"kind": "lstm", "norm": norm, "norm_placement": "cell", "hidden": hidden})


def make_train_step(norm: str, hidden: list[int], old: bool, batch: int) -> Callable[[], None]:
    """One optimizer step of a fresh forecaster (seed 0) on a fixed random batch; `old` swaps in the old loop."""
    torch.manual_seed(0)
    model = build_model(cell_config(norm, hidden), FEATURES, WINDOW)
    if old:
        for mod in model.modules():
            if type(mod) in OLD:
                setattr(mod, "forward", types.MethodType(OLD[type(mod)], mod))  # noqa: B010 - an instance's forward
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, WINDOW, FEATURES), torch.randn(batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    return step


def bench_cpu(args: argparse.Namespace, hidden: list[int]) -> None:
    print(f"CPU, torch {torch.__version__}, hidden {hidden}, window {WINDOW}, {FEATURES} features; best of "
          f"{args.repeats} rounds of {args.steps} steps, round-robin\n")
    print("| cell | threads | batch | old samples/s | new samples/s | new / old (wall) | new / old (CPU time) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (64, 256):
            for norm, label in (("layer", "LN-LSTM"), ("batch", "BN-LSTM")):
                steps = {v: make_train_step(norm, hidden, v == "old", batch) for v in ("old", "new")}
                wall = {v: float("inf") for v in steps}
                cpu = dict(wall)
                for v in steps:
                    steps[v]()  # warm-up
                for _ in range(args.repeats):
                    for v, step in steps.items():
                        t0, c0 = time.perf_counter(), time.process_time()
                        for _ in range(args.steps):
                            step()
                        wall[v] = min(wall[v], (time.perf_counter() - t0) / args.steps)
                        cpu[v] = min(cpu[v], (time.process_time() - c0) / args.steps)
                print(f"| {label} | {threads} | {batch} | {batch / wall['old']:,.0f} | {batch / wall['new']:,.0f} | "
                      f"{wall['old'] / wall['new']:.2f} | {cpu['old'] / cpu['new']:.2f} |", flush=True)


@contextlib.contextmanager
def old_cells() -> Iterator[None]:
    """The old loops as the cells' forward, for every model built inside the block."""
    saved = {cls: cls.forward for cls in OLD}
    for cls, fn in OLD.items():
        setattr(cls, "forward", fn)  # noqa: B010
    try:
        yield
    finally:
        for cls, fwd in saved.items():
            setattr(cls, "forward", fwd)  # noqa: B010


def fit_rate(data: object, m: ModelConfig, batch: int, epochs: int, graph: bool,
             device: str = "cuda") -> tuple[float, float, str]:
    """(best samples/s over epochs 2.., last train loss, fit's message) of cryptonorm's fit."""
    cfg = Config(model=m, train=TrainConfig.model_validate({
        "epochs": epochs, "batch_size": batch, "device": device, "patience": epochs, "grad_clip": 1.0,
        "cuda_graph": graph}))
    res = fit(data, cfg, torch.device(device))  # type: ignore[arg-type]
    return max(h["samples_per_s"] for h in res.history[1:]), res.history[-1]["train_loss"], res.message


def _outputs_and_grads(cell: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                       x: torch.Tensor) -> list[torch.Tensor]:
    xr = x.clone().requires_grad_()
    out = forward(xr)
    w = torch.linspace(-1, 1, out.numel(), device=x.device).reshape(out.shape)  # a generic direction
    return [out.detach(), *torch.autograd.grad((out * w).sum(), [xr, *cell.parameters()])]


def check_against_old(device: str) -> None:
    """Before timing: on the device, the new cells' outputs and gradients against the old loop's (float32,
    batch 64, window 32, hidden 64), as the largest difference relative to each tensor's largest value."""
    for cls, old in OLD.items():
        torch.manual_seed(0)
        cell = (cls(FEATURES, 64) if cls is LayerNormLSTM else cls(FEATURES, 64, WINDOW)).to(device)
        x = torch.randn(64, WINDOW, FEATURES, device=device)
        ref = _outputs_and_grads(cell, lambda x_, c=cell, f=old: f(c, x_), x)
        new = _outputs_and_grads(cell, cell, x)
        worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) for a, b in zip(new, ref, strict=True))
        print(f"{cls.__name__} on {device}: new vs old, largest relative difference over the output and "
              f"{len(ref) - 1} gradients: {worst:.2e}")


def bench_cuda(args: argparse.Namespace, hidden: list[int], device: str = "cuda") -> None:
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    print(f"{name}, torch {torch.__version__}, hidden {hidden}, window {WINDOW}, {FEATURES} features, "
          f"{args.steps_per_epoch} training steps per epoch, fit's best epoch of 2..{args.epochs}\n")
    check_against_old(device)
    ref = ModelConfig.model_validate({"kind": "lstm", "norm": "layer", "hidden": hidden})
    print("\n| model | batch | variant | samples/s | x old eager | last train loss | note |")
    print("|---|---:|---|---:|---:|---:|---|")
    for batch in (int(b) for b in args.sizes.split(",")):
        data = make_data(args.steps_per_epoch * batch, WINDOW, FEATURES)
        for norm, label in (("layer", "LN-LSTM"), ("batch", "BN-LSTM"), (None, "cuDNN LSTM + LayerNorm")):
            m = ref if norm is None else cell_config(norm, hidden)
            variants = [("eager", False, False), ("graph", False, True)] if norm is None else \
                [("old eager", True, False), ("new eager", False, False), ("new + CUDA graph", False, True)]
            base = None
            for name, old, graph in variants:
                t0 = time.perf_counter()
                try:
                    with old_cells() if old else contextlib.nullcontext():
                        rate, loss, msg = fit_rate(data, m, batch, args.epochs, graph, device)
                except Exception as e:  # report and go on: one broken variant must not hide the others
                    print(f"| {label} | {batch} | {name} | failed: {type(e).__name__}: {str(e)[:160]} | | | |")
                    continue
                base = base or rate
                note = msg.split("; ")[-1] if "trained eagerly" in msg else ""  # why a variant ran eagerly
                print(f"| {label} | {batch} | {name} | {rate:,.0f} | {rate / base:.2f} | {loss:.4f} | "
                      f"{note} ({time.perf_counter() - t0:.1f} s) |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--hidden", default="64", help="LSTM layer widths, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="CPU: rounds (best of)")
    ap.add_argument("--steps", type=int, default=3, help="CPU: training steps per round")
    ap.add_argument("--steps-per-epoch", type=int, default=24, help="CUDA: training batches per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="CUDA: epochs (the first is a warm-up)")
    ap.add_argument("--sizes", default="64,256", help="CUDA: batch sizes, comma-separated")
    args = ap.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    (bench_cuda if args.device == "cuda" else bench_cpu)(args, hidden)


if __name__ == "__main__":
    main()
