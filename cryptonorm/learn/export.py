"""ONNX export of a trained forecaster with its scaler folded in: raw feature windows in, forecasts out.

The exported graph computes exactly what `predict` does on a saved run, in float32:
    z = clip((x - center) / scale, -clip, clip), NaN -> 0        (the training scaler, per feature)
    forecast = model(z) in the target's units (de-standardized), or P(up) for a direction model
Input `features`: (B, W, F) float32 raw (unscaled) feature values, the columns in the order the run's
scaler.json lists them, W = features.window rows ending at the bar being forecast. Output `forecast`: (B,).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryptonorm.atomic import atomic_path
from cryptonorm.errors import ConfigError, TrainingError
from cryptonorm.learn.models import Forecaster

INPUT_NAME = "features"
OUTPUT_NAME = "forecast"


class ScaledForecaster(nn.Module):
    """The scaler and the model in one module: (B, W, F) raw features -> (B,) forecasts."""

    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model: Forecaster, center: Sequence[float], scale: Sequence[float],
                 clip: float | None) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("center", torch.as_tensor(np.asarray(center, dtype=np.float32)))  # (F,)
        # division, not multiplication by a rounded reciprocal: the same float32 values as the pipeline's
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))  # (F,)
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, F) -> (B,)
        z = (x - self.center) / self.scale  # (B, W, F)
        if self.clip is not None:
            z = torch.clamp(z, -self.clip, self.clip)
        z = torch.where(torch.isnan(z), torch.zeros_like(z), z)  # the pipeline fills NaN inputs with 0
        return self.model.to_forecast(self.model(z).float())


def export_onnx(model: Forecaster, center: Sequence[float], scale: Sequence[float], clip: float | None,
                window: int, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `model` with the scaler folded in as an ONNX file (atomically), with `metadata` in the file.

    Uses torch's TorchScript-based exporter (fast, no extra dependency), and the torch.export-based one
    (needs onnxscript) for operators the former lacks (RMSNorm). Raises ConfigError when the onnx
    package is missing, TrainingError when the model cannot be exported.
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'cryptonorm[export]'") from None
    wrapped = ScaledForecaster(model.cpu(), center, scale, clip).eval()
    example = torch.zeros(2, window, len(center))  # (B, W, F); the batch axis stays dynamic
    proto = None
    errors: list[str] = []
    for dynamo in (False, True):
        try:
            proto = _export(wrapped, example, dynamo)
            break
        except Exception as e:  # noqa: BLE001 - either exporter may refuse an operator; try the other
            errors.append(f"{'torch.export' if dynamo else 'torchscript'}: {str(e).splitlines()[0] if str(e) else e!r}")
    if proto is None:
        raise TrainingError(f"cannot export the model to ONNX ({'; '.join(errors)})")
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def _export(wrapped: nn.Module, example: torch.Tensor, dynamo: bool) -> Any:
    """One export attempt: the ONNX ModelProto in memory (the TorchScript exporter writes a temp file)."""
    import onnx

    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
        if dynamo:
            program = torch.onnx.export(wrapped, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                        verbose=False)
            if program is None:
                raise TrainingError("torch.onnx.export returned nothing")
            return program.model_proto
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            torch.onnx.export(wrapped, (example,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False)
            return onnx.load(str(path))
