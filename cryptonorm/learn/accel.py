"""Faster training steps: torch.compile of the model (train.compile) and CUDA-graph capture of the whole
optimizer step for fixed-shape batches (train.cuda_graph).

Small batches are launch-bound on a GPU: an eager step of a tiny network costs 1.6-2.8 ms whatever the batch,
almost all of it Python and kernel launches. A CUDA graph records the step once (index gather, forward,
loss, backward, clipping, AdamW with capturable=True) and replays it with one launch; only the batch's
END-row indices change between replays, copied into a static (B,) buffer. Batches must all have one shape,
so the last short batch of an epoch is dropped (its samples are reshuffled into full batches next epoch).

Where a feature is unavailable (no CUDA for graphs, MPS or a build without a compiler for compile) training
runs eagerly and the fit's message carries a one-line note saying so: nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cryptonorm.learn.loop import Batches, autocast, gather_windows

# the torch.compile backend; tests use "aot_eager" (dynamo and the autograd graphs, no C++ build)
COMPILE_BACKEND = "inductor"


def compile_model(model: nn.Module, mode: str, dev: torch.device) -> tuple[nn.Module, str | None]:
    """(the module to train with, a note when compile is unavailable). mode: none, default, reduce-overhead.

    The returned module shares the model's parameters and buffers; checkpoints keep using `model`.
    """
    if mode == "none":
        return model, None
    if dev.type == "mps":
        return model, f"train.compile={mode} is not used on MPS; trained eagerly"
    try:
        compiled = torch.compile(model, backend=COMPILE_BACKEND, mode=mode if COMPILE_BACKEND == "inductor" else None)
        return SafeCompiled(model, compiled, mode), None
    except Exception as e:  # noqa: BLE001 - any failure to set up compile means: train eagerly, and say so
        return model, f"train.compile={mode} is unavailable ({_first_line(e)}); trained eagerly"


class SafeCompiled(nn.Module):
    """The compiled forward, falling back to the eager model (once, for good) if compiling fails at the
    first call (no C++ compiler, an unsupported op); `note` then says why."""

    def __init__(self, model: nn.Module, compiled: Callable[[torch.Tensor], torch.Tensor], mode: str) -> None:
        super().__init__()
        self.model = model  # registered: parameters() are the model's, for clipping
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = compiled
        self._mode = mode
        self.note: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, F) -> (B,), compiled when it works."""
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as e:  # noqa: BLE001 - the backend failed: eager from now on, with a note
                self._compiled = None
                self.note = f"train.compile={self._mode} failed ({_first_line(e)}); trained eagerly"
        out: torch.Tensor = self.model(x)
        return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def graph_note(dev: torch.device, n_train: int, batch_size: int) -> str | None:
    """Why train.cuda_graph cannot be used for this fit (None: it can)."""
    if dev.type != "cuda" or not torch.cuda.is_available():
        return f"train.cuda_graph needs a CUDA device (this fit: {dev.type}); trained eagerly"
    if n_train < batch_size:
        return (f"train.cuda_graph needs at least one full batch ({n_train} training samples < "
                f"train.batch_size {batch_size}); trained eagerly")
    return None


class GraphedStep:
    """One training step on a (B,) batch of END rows, captured in a CUDA graph; call it with the rows.

    Capture needs the optimizer's state to exist and the autograd buffers allocated, so a few warm-up steps
    run first on a side stream; every weight, buffer and optimizer state tensor is then restored in place
    (same memory, as the graph requires), so the warm-up leaves no trace in training.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, data: Batches,
                 grad_clip: float | None, use_bf16: bool) -> None:
        self.model, self.opt, self.loss_fn, self.data = model, opt, loss_fn, data
        self.grad_clip, self.use_bf16 = grad_clip, use_bf16
        self.idx = data.train_idx[: data.batch_size].clone()  # (B,) static input buffer
        saved = _snapshot(model, opt)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)  # grads are allocated inside the graph's pool and overwritten each replay
        with torch.cuda.graph(self.graph):
            self.loss = self._step()  # () static output
        _restore(model, opt, saved)

    def _step(self) -> torch.Tensor:
        xb = gather_windows(self.data.X, self.idx, self.data.offsets)  # (B, W, F)
        with autocast(xb.device, self.use_bf16):
            out = self.model(xb)  # (B,)
        loss: torch.Tensor = self.loss_fn(out.float(), self.data.y[self.idx])
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)  # no host sync: capturable
        self.opt.step()
        return loss.detach()

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Run the step on the rows `idx` (B,); the mean loss, on the device (valid until the next call)."""
        self.idx.copy_(idx)
        self.graph.replay()
        return self.loss


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    """Clones of the model's weights and buffers and of the optimizer's existing state."""
    out = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        for k, v in opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                out.setdefault(f"opt{i}", {})[k] = v.detach().clone()
    return out


@torch.no_grad()
def _restore(model: nn.Module, opt: torch.optim.Optimizer, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """Copy the snapshot back into the same tensors; optimizer state created by the warm-up goes back to 0
    (AdamW's fresh state: zero moments, step 0)."""
    for k, v in model.state_dict().items():
        v.copy_(saved["model"][k])
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        old = saved.get(f"opt{i}", {})
        for k, v in opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                v.copy_(old[k]) if k in old else v.zero_()
