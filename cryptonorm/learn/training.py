"""Device, seeds, the training loop, prediction and checkpoints.

The data stay where the model is: X (N, F), y (N,) and the index arrays are moved to the device once, and
each batch of windows is gathered there by index (`X[idx[:, None] + offsets]`, (B, W, F)) - no DataLoader,
no per-batch host->device copies, and no per-step synchronisation: the epoch's loss is summed on the
device and read once per epoch.

Regression targets (log returns, volatilities) are tiny, ~1e-3. The loss sees them standardized with the
training split's mean and std instead: the Huber threshold (delta = 1 standard deviation) then means the
same thing for every market and timeframe, the output layer works at unit scale, and the learning rate
does not have to be retuned for the size of the target. The stats are stored on the model (buffers
`y_mean`, `y_std`) and in checkpoints; `predict` undoes the scaling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cryptonorm.config import Config, check_model
from cryptonorm.errors import ConfigError, TrainingError
from cryptonorm.learn import accel
from cryptonorm.learn.budget import plan
from cryptonorm.learn.checkpoints import save_checkpoint
from cryptonorm.learn.device import resolve_device, seed_everything
from cryptonorm.learn.input_norms import RevIN, revin_target_feature
from cryptonorm.learn.loop import (
    Batches,
    EarlyStopping,
    TrainState,
    copy_state,
    epoch_record,
    evaluate,
    inference_chunks,
    run_epoch,
)
from cryptonorm.learn.loop import gather_windows as gather_windows  # re-exported: predict and callers use it
from cryptonorm.learn.losses import make_loss
from cryptonorm.learn.models import Forecaster, build_model
from cryptonorm.learn.norms import eval_uses_batch_statistics, recalibrate, uses_batch_statistics


class WindowedData(Protocol):
    """The fields of dataset.Dataset that training reads (any object with them will do)."""

    @property
    def X(self) -> np.ndarray: ...  # (N, F) float32, scaled
    @property
    def y(self) -> np.ndarray: ...  # (N,) float32, label of the window ending at row t
    @property
    def train_idx(self) -> np.ndarray: ...  # int64 END rows of the samples of each split
    @property
    def val_idx(self) -> np.ndarray: ...
    @property
    def test_idx(self) -> np.ndarray: ...
    @property
    def window(self) -> int: ...


@dataclass
class FitResult:
    """What `fit` returns: the model with the best weights loaded, in eval mode, and how training went."""

    model: Forecaster
    history: list[dict[str, Any]]  # one dict per epoch, the same dicts the progress callback received
    best_epoch: int  # 0 = no epoch improved on the initial weights (e.g. a non-finite first epoch)
    best_loss: float  # best validation loss (training loss when there is no validation split)
    stopped: str  # completed / early_stop / non_finite_loss
    message: str  # one line on how training ended, for the user
    device: str


# ---------------------------------------------------------------- the training loop


def learning_rate(step: int, total_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate at optimizer step `step` (0-based): cosine decays from base_lr to 0 over all steps."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return base_lr  # "none", and "plateau" (which lowers it from the validation loss instead)


def output_map(cfg: Config) -> str:
    """"positive" when the target must be > 0 (a volatility predicted as vol or var), else "value"."""
    positive = cfg.target.kind == "volatility" and cfg.target.vol_form in ("vol", "var")
    return "positive" if positive else "value"


def target_stats(y_train: np.ndarray, loss: str) -> tuple[float, float]:
    """(mean, std) used to standardize the target; (0, 1) for bce, whose labels are 0/1."""
    if loss == "bce":
        return 0.0, 1.0
    finite = y_train[np.isfinite(y_train)].astype(np.float64)  # a bad label shows up as a bad loss
    if finite.size == 0:
        return 0.0, 1.0
    mean, std = float(finite.mean()), float(finite.std())
    return mean, (std if std > 0 and math.isfinite(std) else 1.0)


def fit(
    ds: WindowedData,
    cfg: Config,
    device: torch.device | str | None = None,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
) -> FitResult:
    """Train a fresh model on ds.train_idx, early-stop on ds.val_idx, return the best weights.

    `device` defaults to cfg.train.device. `progress` receives each epoch's history dict. With
    `checkpoint`, the best weights are written there (atomically) every time they improve.
    `on_epoch_end(state)` is called after every epoch that training goes on from (save `state.state_dict()`);
    `resume` is such a saved state: training continues after its epoch exactly as it would have gone on.
    """
    t = cfg.train
    dev = device if isinstance(device, torch.device) else resolve_device(device or t.device)
    _check_fit_inputs(ds, cfg)
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    seed_everything(cfg.seed, t.deterministic)
    loss_name = cfg.target.resolved_loss
    model = build_model(cfg.model, ds.X.shape[1], int(ds.window)).to(dev)  # the seeded initial weights
    graph_why = accel.graph_note(dev, len(ds.train_idx), t.batch_size) if t.cuda_graph else None
    graph = t.cuda_graph and graph_why is None
    data = _batches(ds, cfg, dev, loss_name, drop_single=uses_batch_statistics(model), full_only=graph)
    state = _init_state(model, cfg, dev, loss_name, data.y_mean, data.y_std, capturable=graph)
    if resume is not None:  # before any graph capture or compilation: they see the restored tensors
        state.load_state_dict(resume)
    denorm = _set_revin_target(model, ds, cfg)
    # the loss reads the model's output map (positive outputs are part of what is trained): learn/losses.py
    loss_fn = make_loss(loss_name, model.to_forecast, data.y_mean, data.y_std, cfg.target.vol_form)
    use_bf16 = t.precision == "bf16" and dev.type == "cuda"
    notes = [graph_why] if graph_why else []
    notes += _accelerate(state, data, cfg, dev, loss_fn, use_bf16, graph)
    stopped, bad_value = _epoch_loop(state, data, cfg, loss_fn, use_bf16, progress, checkpoint, on_epoch_end)
    state.model.load_state_dict(state.best_state)
    if denorm:
        notes.append(f"RevIN de-normalizes the forecast with the window statistics of {denorm}")
    if cfg.model.batch_norm.eval == "recalibrate":
        notes.append(_recalibrate(state, data, cfg, checkpoint))
    state.model.eval()
    if isinstance(state.step_model, accel.SafeCompiled) and state.step_model.note:
        notes.append(state.step_model.note)
    message = _end_message(stopped, bad_value, state, cfg, has_val=len(data.val_idx) > 0)
    return FitResult(state.model, state.history, state.stopper.best_epoch, state.stopper.best_loss, stopped,
                     "; ".join([message, *notes]), str(dev))


def _accelerate(state: TrainState, data: Batches, cfg: Config, dev: torch.device, loss_fn: nn.Module,
                use_bf16: bool, graph: bool) -> list[str]:
    """Set up train.cuda_graph or train.compile on the state; the notes on what could not be used."""
    t = cfg.train
    notes: list[str] = []
    if graph:
        state.graph_step = accel.GraphedStep(state.model, state.opt, loss_fn, data, t.grad_clip, use_bf16)
        if t.compile != "none":
            notes.append(f"train.compile={t.compile} is not used with train.cuda_graph (the graph already "
                         "removes the launch overhead)")
    elif t.compile != "none":
        state.step_model, note = accel.compile_model(state.model, t.compile, dev)
        notes += [note] if note else []
    return notes


def _recalibrate(state: TrainState, data: Batches, cfg: Config, checkpoint: str | Path | None) -> str:
    """model.batch_norm.eval recalibrate (AdaBN): after training, the running statistics of every BatchNorm are
    re-estimated with the weights frozen on the latest `batch_norm.recalibrate_bars` training windows, and the
    checkpoint is written again with them. In walk-forward every fold's fit does this on its own windows."""
    recent = torch.sort(data.train_idx).values[-cfg.model.batch_norm.recalibrate_bars :]  # (k,) latest END rows
    recalibrate(state.model, gather_windows(data.X, recent, data.offsets))  # one batch of (k, W, F)
    if checkpoint is not None and state.stopper.best_epoch:
        save_checkpoint(checkpoint, state.model, cfg, data.X.shape[1], len(data.offsets),
                        extra={"epoch": state.stopper.best_epoch, "loss": state.stopper.best_loss,
                               "bn_recalibrated_windows": len(recent)})
    return f"BatchNorm statistics recalibrated on the last {len(recent)} training windows"


def _set_revin_target(model: Forecaster, ds: WindowedData, cfg: Config) -> str | None:
    """RevIN with revin_denorm auto: de-normalize forecasts with the window statistics of the input column
    in the target's units (input_norms.revin_target_feature). Needs the dataset's feature names and scaler (a bare
    WindowedData has neither: then nothing is de-normalized). Returns the column's name, or None."""
    if not isinstance(model.input_norm, RevIN) or cfg.model.revin_denorm == "off":
        return None
    names, scaler = getattr(ds, "feature_names", None), getattr(ds, "scaler", None)
    if names is None or scaler is None:
        return None
    name = revin_target_feature(list(names), cfg.target.kind, cfg.target.horizon, cfg.target.vol_form)
    if name is None:
        return None
    j = list(names).index(name)
    # the scaler maps raw -> (raw - center) / scale; the forecast goes back to raw units the same way
    model.input_norm.set_target(j, float(scaler.scale[j]), float(scaler.center[j]))
    return name


def _check_fit_inputs(ds: WindowedData, cfg: Config) -> None:
    """Config errors that need the data (window) and index sanity checks, before anything is built."""
    t, m = cfg.train, cfg.model
    window = int(ds.window)
    try:  # the config's own check (norm_facts.py), here for a config built by hand or a dataset's window
        check_model(m, t.batch_size, window)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if len(ds.train_idx) == 0:
        raise TrainingError("the training split has no samples; use more data or a shorter window/horizon")
    for name in ("train", "val"):
        arr = np.asarray(getattr(ds, f"{name}_idx"), dtype=np.int64)
        if len(arr) and (arr.min() < window - 1 or arr.max() >= len(ds.X)):
            raise ValueError(f"{name}_idx must hold END rows in [{window - 1}, {len(ds.X) - 1}]")


def _batches(ds: WindowedData, cfg: Config, dev: torch.device, loss_name: str, drop_single: bool,
             full_only: bool = False) -> Batches:
    """Move the data to the device once; y is standardized once here, not per batch.

    `drop_single`: a model with batch statistics cannot train on a last batch of one sample; it is dropped
    (and reshuffled into another batch next epoch). `full_only` (CUDA graphs): every batch has
    train.batch_size samples; the last short batch is dropped the same way.
    """
    train_np = np.asarray(ds.train_idx, dtype=np.int64)
    y_mean, y_std = target_stats(np.asarray(ds.y)[train_np], loss_name)
    window, bs, n_train = int(ds.window), cfg.train.batch_size, len(train_np)
    n_batches = n_train // bs if full_only else math.ceil(n_train / bs)
    if drop_single and not full_only and n_train % bs == 1:
        n_batches -= 1
        if n_batches == 0:
            raise TrainingError("model.norm=batch needs at least 2 training samples; use more data")
    return Batches(
        X=torch.as_tensor(np.asarray(ds.X), dtype=torch.float32).to(dev),  # (N, F)
        y=torch.as_tensor((np.asarray(ds.y, dtype=np.float64) - y_mean) / y_std, dtype=torch.float32).to(dev),
        train_idx=torch.as_tensor(train_np).to(dev),  # (n_train,)
        val_idx=torch.as_tensor(np.asarray(ds.val_idx, dtype=np.int64)).to(dev),  # (n_val,)
        offsets=torch.arange(-window + 1, 1, device=dev),  # (W,)
        batch_size=bs,
        n_batches=n_batches,
        y_mean=y_mean,
        y_std=y_std,
        groups=_groups(ds),
    )


def _groups(ds: WindowedData) -> torch.Tensor | None:
    """A universe's timestamp group per training sample when it batches by time (`groups` on the data)."""
    groups = getattr(ds, "groups", None)
    return None if groups is None else torch.as_tensor(np.asarray(groups, dtype=np.int64))


def _init_state(model: Forecaster, cfg: Config, dev: torch.device, loss_name: str, y_mean: float,
                y_std: float, capturable: bool = False) -> TrainState:
    """The state before epoch 1: AdamW, the plateau scheduler if asked for, and the batch-order generator.

    `capturable` (CUDA graphs): AdamW keeps its step count and learning rate in device tensors, so the whole
    step can be captured; the rate is then set in place (loop.set_lr)."""
    t = cfg.train
    model.output = "logit" if loss_name == "bce" else output_map(cfg)
    model.y_mean.fill_(y_mean)
    model.y_std.fill_(y_std)
    # nanoGPT's split: decay the matrices, not the biases and norm gains
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if capturable:
        opt = torch.optim.AdamW(groups, lr=torch.tensor(t.scaled_lr, device=dev), capturable=True, foreach=True)
    else:
        # fused: one kernel for every parameter; on CPU 2.6x faster than the per-tensor loop for our small
        # models, where the step was 2/3 of a batch (benchmarks/bench_norms.py, README)
        opt = torch.optim.AdamW(groups, lr=t.scaled_lr, fused=fused_adamw(dev))  # train.lr_scaling applied
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=max(1, t.patience // 2))
        if t.schedule == "plateau"
        else None
    )
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order: seeded, on the CPU (same order on any device)
    return TrainState(model, opt, plateau, gen, EarlyStopping(t.patience), copy_state(model))


def _epoch_loop(state: TrainState, data: Batches, cfg: Config, loss_fn: nn.Module, use_bf16: bool,
                progress: Callable[[dict[str, Any]], None] | None,
                checkpoint: str | Path | None,
                on_epoch_end: Callable[[TrainState], None] | None = None) -> tuple[str, str]:
    """Passes state.epoch + 1 .. the budget's (train.budget); returns (stopped, the non-finite value if any)."""
    t = cfg.train
    budget = plan(t, data.n_batches)

    def lr_at(step: int) -> float | None:
        return learning_rate(step, budget.total_steps, budget.lr, t.schedule) if t.schedule == "cosine" else None

    state.model.train()
    while state.epoch < budget.epochs:
        t0 = time.perf_counter()
        n_b = budget.batches_in(state.epoch + 1)
        train_loss = run_epoch(state, data, loss_fn, lr_at, t.grad_clip, use_bf16, n_batches=n_b)
        train_seconds = time.perf_counter() - t0
        has_val = len(data.val_idx) > 0
        val_loss = evaluate(state.model, data, loss_fn, max(data.batch_size, 4096), use_bf16) if has_val else None
        monitored = val_loss if val_loss is not None else train_loss
        state.epoch += 1
        finite = math.isfinite(train_loss) and (val_loss is None or math.isfinite(val_loss))
        improved = state.stopper.update(state.epoch, monitored, finite)
        if improved:
            state.best_state = copy_state(state.model)
            if checkpoint is not None:
                save_checkpoint(checkpoint, state.model, cfg, data.X.shape[1], len(data.offsets),
                                extra={"epoch": state.epoch, "loss": monitored})
        record = epoch_record(state, budget.epochs, train_loss, val_loss, improved, time.perf_counter() - t0,
                              train_seconds, min(len(data.train_idx), n_b * data.batch_size))
        state.history.append(record)
        if progress is not None:
            progress(record)
        if not finite:
            return "non_finite_loss", (f"train loss {train_loss}" if not math.isfinite(train_loss)
                                       else f"val loss {val_loss}")
        if state.stopper.should_stop:
            return "early_stop", ""
        if state.plateau is not None:
            state.plateau.step(monitored)
        if on_epoch_end is not None and state.epoch < budget.epochs:  # not train.epochs: budget steps|samples
            on_epoch_end(state)
    return "completed", ""


def _end_message(stopped: str, bad_value: str, state: TrainState, cfg: Config, has_val: bool) -> str:
    """One line on how training ended, for the user."""
    which = "val" if has_val else "train (no validation split)"
    best_epoch, best_loss, epochs = state.stopper.best_epoch, state.stopper.best_loss, len(state.history)
    if stopped == "non_finite_loss":
        kept = f"kept the weights of epoch {best_epoch}" if best_epoch else "kept the initial weights"
        return (f"training stopped at epoch {epochs}: {bad_value} is not finite; {kept}. Lower train.lr, "
                "set train.grad_clip, or check the data for missing or extreme values")
    if stopped == "early_stop":
        return (f"early stop at epoch {epochs}: no {which} loss improvement in {cfg.train.patience} epochs; "
                f"best {best_loss:.6g} at epoch {best_epoch}")
    return f"trained {epochs} epochs; best {which} loss {best_loss:.6g} at epoch {best_epoch}"


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict(
    model: Forecaster,
    ds: WindowedData,
    idx: np.ndarray,
    device: torch.device | str | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Forecasts (len(idx),) float64 for the windows ending at rows `idx`: values in the target's units
    (the standardization undone), or probabilities of an up move for direction models. Moves the model to
    `device` (default: where it is) and leaves it in eval mode."""
    idx_np = np.asarray(idx, dtype=np.int64)
    if len(idx_np) == 0:
        return np.empty(0, dtype=np.float64)
    if device is None:
        dev = next(model.buffers()).device
    else:
        dev = device if isinstance(device, torch.device) else resolve_device(device)
    window = int(ds.window)
    if idx_np.min() < window - 1 or idx_np.max() >= len(ds.X):
        raise ValueError(f"idx must hold END rows in [{window - 1}, {len(ds.X) - 1}]")
    model.to(dev).eval()
    X = torch.as_tensor(np.asarray(ds.X), dtype=torch.float32).to(dev)  # (N, F)
    rows = torch.as_tensor(idx_np).to(dev)  # (n,)
    offsets = torch.arange(-window + 1, 1, device=dev)  # (W,)
    outs = []
    for a, e in inference_chunks(len(rows), batch_size, eval_uses_batch_statistics(model)):
        b = rows[a:e]  # (B,)
        outs.append(model.to_forecast(model(gather_windows(X, b, offsets)).float()))  # (B,)
    return torch.cat(outs).cpu().numpy().astype(np.float64)


def fused_adamw(dev: torch.device) -> bool:
    """Whether AdamW's fused kernel runs on `dev`: CUDA always; the CPU from torch 2.4 (earlier versions
    refuse fused=True for CPU parameters); elsewhere (MPS, ...) the default implementation."""
    if dev.type == "cuda":
        return True
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return dev.type == "cpu" and (major, minor) >= (2, 4)
