"""The device, chosen once (auto = cuda, then mps, then cpu), and seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from cryptonorm.errors import ConfigError, TrainingError

# ---------------------------------------------------------------- device and seeds


def resolve_device(spec: str) -> torch.device:
    """`auto` = cuda, then mps, then cpu; cpu, cuda, cuda:N, mps; TrainingError when not available."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise TrainingError("train.device=mps but MPS is not available on this machine; use auto or cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise TrainingError(
                f"train.device={spec} but CUDA is not available (torch {torch.__version__}, {build}); "
                "use train.device=auto or cpu"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(
                f"train.device={spec} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
        return dev
    raise ConfigError(f"train.device: got {spec!r}; allowed: auto, cpu, cuda, cuda:N, mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch (all devices); `deterministic` switches torch to deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
