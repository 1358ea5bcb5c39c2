"""The scaler: fitted on the rows training windows cover, applied to every row, clipped, stored as JSON.

Scaled inputs are clipped to +-CLIP scale units so one crash bar cannot dominate a batch, except in front of
an input norm (model.input_norm revin or dain): those normalize each window themselves, and a clip would
saturate a level feature that moved out of its training range (prices at 10x the training level: RevIN could
no longer see the shift, issue 23). `input_clip` is the rule; the clip is stored with the scaler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryptonorm.errors import ConfigError, DataError

CLIP = 10.0  # scaled inputs are clipped to [-CLIP, CLIP] (scale units), unless an input norm follows
_CHUNK = 1 << 16  # rows per chunk when scaling: bounds the float64 temporaries


# ---------------------------------------------------------------- scaler


KINDS = ("standard", "robust", "minmax", "none")


def input_clip(input_norm: str) -> float | None:
    """The clip of the scaled inputs of a model with `model.input_norm`: CLIP, or None (no clip) in front of
    an input norm, which must see the inputs as they are to normalize them per window."""
    return CLIP if input_norm == "none" else None


@dataclass(eq=False)
class Scaler:
    """Per-column affine scaling fitted on training rows only; JSON-safe via to_dict/from_dict.

    standard: (x - mean) / std; robust: (x - median) / IQR; minmax: (x - min) / (max - min); none:
    identity. A column with zero spread gets scale 1. Results are clipped to [-clip, clip] (not for none).
    """

    kind: str = "standard"
    center: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (F,) float64
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))  # (F,) float64, > 0
    clip: float | None = CLIP
    names: list[str] | None = None  # feature names, for checking a saved scaler against new data
    n_rows: int = 0  # rows it was fitted on

    def fit(self, X: np.ndarray, rows: np.ndarray | None = None, keep: Sequence[int] = (),
            names: list[str] | None = None) -> Scaler:
        """Fit on X[rows] (all rows when None); columns in `keep` stay unscaled. Returns self."""
        if self.kind not in KINDS:
            raise ConfigError(f"features.scaler {self.kind!r} is unknown; use standard, robust, minmax or none")
        X = np.asarray(X)
        n_feat = X.shape[1]
        center, scale = np.zeros(n_feat), np.ones(n_feat)
        n_rows = X.shape[0] if rows is None else int(np.count_nonzero(rows) if rows.dtype == bool else len(rows))
        if self.kind != "none":
            for j in range(n_feat):
                if j in keep:
                    continue
                col = X[:, j] if rows is None else X[:, j][rows]  # one column at a time: bounded memory
                col = col[np.isfinite(col)].astype("float64", copy=False)
                if len(col) == 0:
                    continue
                if self.kind == "standard":
                    c, s = float(col.mean()), float(col.std())
                elif self.kind == "robust":
                    q25, c, q75 = (float(q) for q in np.quantile(col, [0.25, 0.5, 0.75]))
                    s = q75 - q25 if q75 > q25 else float(col.std())
                else:
                    c, s = float(col.min()), float(col.max() - col.min())
                center[j] = c
                # zero (or rounding-noise) spread: leave the column centred but unscaled
                scale[j] = s if s > 1e-12 * max(abs(c), 1e-300) and math.isfinite(s) else 1.0
        self.center, self.scale, self.names, self.n_rows = center, scale, names, n_rows
        if self.kind == "none":
            self.clip = None
        return self

    def transform(self, X: np.ndarray, fill_nan: float | None = None) -> np.ndarray:
        """(n, F) -> (n, F) float32 scaled (and clipped), in row chunks; NaN -> fill_nan if given."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.center):
            raise DataError(f"the scaler was fitted on {len(self.center)} feature(s) but got an array of shape "
                            f"{X.shape}; use the features the model was trained with")
        out = np.empty(X.shape, dtype=np.float32)
        for a in range(0, len(X), _CHUNK):
            z = (X[a:a + _CHUNK] - self.center) / self.scale  # (chunk, F) float64
            if self.clip is not None:
                np.clip(z, -self.clip, self.clip, out=z)
            if fill_nan is not None:
                z[np.isnan(z)] = fill_nan
            out[a:a + _CHUNK] = z
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (plain floats and lists)."""
        return {"kind": self.kind, "center": [float(v) for v in self.center],
                "scale": [float(v) for v in self.scale], "clip": self.clip,
                "names": list(self.names) if self.names is not None else None, "n_rows": int(self.n_rows)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of to_dict."""
        try:
            center = np.asarray(d["center"], dtype="float64")
            scale = np.asarray(d["scale"], dtype="float64")
            kind = str(d["kind"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"saved scaler is malformed ({e}); retrain the model") from None
        if kind not in KINDS:
            raise DataError(f"saved scaler has an unknown kind {kind!r} (known: {', '.join(KINDS)}); it was "
                            "edited or comes from another version: retrain the model")
        if center.shape != scale.shape or center.ndim != 1 or not (scale > 0).all():
            raise DataError("saved scaler is malformed (center/scale shapes or a non-positive scale); retrain")
        clip = d.get("clip", CLIP)
        names = d.get("names")
        return cls(kind=kind, center=center, scale=scale, clip=None if clip is None else float(clip),
                   names=None if names is None else [str(n) for n in names], n_rows=int(d.get("n_rows", 0)))
